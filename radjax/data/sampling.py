"""The two corrections for imbalanced classes: loss weights per class and balanced sampling.

`class_weights` is Keras' `class_weight` (`config.class_weight`); `balanced_plan` fills every
epoch with equal shares of each class (`config.sampling="balanced"`). The seed streams here keep
each pipeline's randomness apart from the epochs' (which use (seed, epoch), epoch >= 1).
"""

from __future__ import annotations

import math

import numpy as np

from radjax.errors import UserError

# Seed stream of the recalibration order (epochs use (seed, epoch) with epoch >= 1).
RECALIBRATION_STREAM = 0
# Third seed word of balanced sampling's per-epoch plan ((seed, epoch) orders a shuffled epoch).
BALANCED_STREAM = 1


def balanced_plan(num_classes: int, seed: int, epoch: int, count: int):
  """Balanced sampling's epoch of `count` positions, a pure function of (seed, epoch): the class
  of each position (every class fills count // num_classes of them, the remainder goes to
  distinct random classes, in a seeded random order) and one order seed per class (the pipeline
  takes each class' images in that seeded order, repeated as needed)."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, BALANCED_STREAM]))
  choices = np.concatenate([np.repeat(np.arange(num_classes), count // num_classes),
                            rng.choice(num_classes, count % num_classes, replace=False)])
  rng.shuffle(choices)
  class_seeds = rng.integers(0, 2**62, size=num_classes, dtype=np.int64)
  return choices.astype(np.int64), class_seeds



def explicit_class_weights(value: str) -> list[float] | None:
  """The weights of `class_weight="w0,w1,..."` (None for "" and "balanced"); each positive."""
  if value in ("", "balanced"):
    return None
  try:
    weights = [float(w) for w in value.split(",")]
  except ValueError:
    weights = []
  if len(weights) < 2 or not all(w > 0 and math.isfinite(w) for w in weights):
    raise UserError(f"--config.class_weight={value}: expected '', 'balanced' or one positive "
                    "weight per class, comma-separated (e.g. 1,3)")
  return weights


def class_weights(config, labels, class_names) -> np.ndarray | None:
  """Per-class loss weights (float32, indexed by label) for `config.class_weight`, or None."""
  if not config.class_weight:
    return None
  if config.class_weight == "balanced":
    from sklearn.utils.class_weight import compute_class_weight

    return compute_class_weight("balanced", classes=np.arange(len(class_names)),
                                y=np.asarray(labels)).astype(np.float32)
  weights = explicit_class_weights(config.class_weight)
  if len(weights) != len(class_names):
    raise UserError(f"--config.class_weight={config.class_weight}: {len(weights)} weights for "
                    f"{len(class_names)} classes ({', '.join(class_names)})")
  return np.asarray(weights, np.float32)
