"""How a model's answers change under a perturbation: flip rate, probability change, and the
figures `radjax evaluate` reports, for `radjax stress`.

Decisions are the run's own: a binary run's logit against its operating point's (or 0.5's), a
multiclass run's most probable class, a multilabel run's every label against its own threshold.

  flip rate          share of decisions that differ from the clean image's (multilabel: of every
                     image-label pair)
  mean |change|      mean absolute change of the probability that was decided on: binary, the
                     positive class'; multiclass, the clean image's predicted class'; multilabel,
                     every label's
"""

from __future__ import annotations

import numpy as np

from radjax.metrics import classification as metrics
from radjax.metrics.probabilities import sigmoid, softmax


def decisions(logits, task: str, threshold_logit=0.0) -> np.ndarray:
  """(n,) booleans (binary), (n,) classes (multiclass) or (n, K) booleans (multilabel:
  `threshold_logit` one per label, or one for all)."""
  logits = np.asarray(logits, np.float64)
  if task == "multiclass":
    return np.argmax(logits, axis=-1)
  return logits > np.asarray(threshold_logit, np.float64)


def decided_probability(logits, task: str, clean_logits) -> np.ndarray:
  """(n,) or (n, K) probabilities whose change is reported (see the module's docstring)."""
  logits = np.asarray(logits, np.float64)
  if task == "multiclass":
    chosen = np.argmax(np.asarray(clean_logits), axis=-1)
    return softmax(logits)[np.arange(len(logits)), chosen]
  return sigmoid(logits)


def changes(clean_logits, logits, task: str, threshold_logit=0.0) -> tuple[np.ndarray, np.ndarray]:
  """Per image: (the share of its decisions that flipped, its mean |change| of probability)."""
  flipped = decisions(clean_logits, task, threshold_logit) != decisions(logits, task,
                                                                        threshold_logit)
  change = np.abs(decided_probability(logits, task, clean_logits)
                  - decided_probability(clean_logits, task, clean_logits))
  if task == "multilabel":
    return flipped.mean(axis=1), change.mean(axis=1)
  return flipped.astype(np.float64), change


def condition(clean_logits, logits, labels, task: str, threshold_logit=0.0, seed: int = 0) -> dict:
  """AUC and accuracy with their bootstrap intervals (as `radjax evaluate` computes them; binary
  accuracy at `threshold_logit`), flip rate and mean |change| against `clean_logits`, and the
  per-image flips and changes."""
  logits = np.asarray(logits, np.float64)
  if task == "binary":
    result = metrics.binary_metrics(logits, labels, threshold_logit)
    intervals = metrics.bootstrap_intervals(logits, labels, threshold_logit, seed=seed)
  elif task == "multiclass":
    result = metrics.multiclass_metrics(logits, labels)
    intervals = metrics.multiclass_bootstrap_intervals(logits, labels, seed=seed)
  else:
    result = metrics.multilabel_metrics(logits, labels)
    intervals = metrics.multilabel_bootstrap_intervals(logits, labels, seed=seed)
  flips, change = changes(clean_logits, logits, task, threshold_logit)
  return {"auc": result["auc"], "auc_interval": list(intervals["auc"]),
          "accuracy": result["accuracy"], "accuracy_interval": list(intervals["accuracy"]),
          "flip_rate": float(flips.mean()), "mean_abs_change": float(change.mean()),
          "image_flips": flips.tolist(), "image_changes": change.tolist()}
