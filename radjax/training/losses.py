"""Training losses, chosen by `config.loss`: one function each, one value per example.

A loss is `loss(logits, labels, config) -> (n,) per-example losses` for the three tasks:

    binary      (n,) logits     (n,) labels in {0, 1}
    multiclass  (n, N) logits   (n,) labels in 0..N-1
    multilabel  (n, K) logits   (n, K) labels: 1, 0, or -1 (unknown: must weigh nothing)

`config.loss` names a function of this module ("cross_entropy", the paper's; "focal"), or any
importable one as "package.module:function": a researcher's own loss is that function and that
setting, with no change to radjax (examples/custom_loss.py). The train step weighs the values
(class_weight), mixes them (mixup, cutmix) and averages them over the batch.

Whatever trains, validation reports the plain cross-entropy (radjax.metrics.classification), so
runs with different losses stay comparable.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import optax

from radjax.errors import UserError


def cross_entropy(logits, labels, config=None):
  """Binary cross-entropy of a sigmoid logit (the paper's), softmax cross-entropy of N logits,
  or the mean binary cross-entropy of each image's known labels; with `config.label_smoothing`
  e > 0 the targets are y (1 - e) + e / C (C = 2 for a sigmoid, N for a softmax)."""
  smoothing = config.label_smoothing if config is not None else 0.0
  if labels.ndim == 2:  # multilabel
    losses = optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), _smoothed((labels == 1).astype(jnp.float32), smoothing, 2))
    return known_mean(losses, labels)
  if logits.ndim == 1:
    return optax.sigmoid_binary_cross_entropy(
        logits, _smoothed(labels.astype(logits.dtype), smoothing, 2))
  if not smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                     soft_targets(logits, labels, smoothing))


def focal(logits, labels, config):
  """Focal loss (Lin et al. 2017) without its class balance term alpha (class_weight does that):
  each class' cross-entropy term scaled by (1 - p)^gamma, `config.focal_gamma`, so confidently
  right examples weigh less. gamma 0 is `cross_entropy`; label smoothing applies as there."""
  gamma, smoothing = config.focal_gamma, config.label_smoothing
  logits = logits.astype(jnp.float32)
  if logits.ndim == 1 or labels.ndim == 2:  # sigmoid logits: each is a two-class softmax
    positive = (labels == 1) if labels.ndim == 2 else labels
    target = _smoothed(positive.astype(jnp.float32), smoothing, 2)
    losses = (_focal_term(target, jax.nn.log_sigmoid(logits), gamma)
              + _focal_term(1 - target, jax.nn.log_sigmoid(-logits), gamma))
    return known_mean(losses, labels) if labels.ndim == 2 else losses
  log_p = jax.nn.log_softmax(logits)
  return jnp.sum(_focal_term(soft_targets(logits, labels, smoothing), log_p, gamma), axis=-1)


def _focal_term(target, log_p, gamma: float):
  """-target (1 - p)^gamma log p; no modulating factor at gamma 0 (whose gradient at p = 1 would
  be 0 * inf)."""
  if not gamma:
    return -target * log_p
  return -target * (-jnp.expm1(log_p)) ** gamma * log_p


def _smoothed(target, smoothing: float, classes: int):
  return target * (1 - smoothing) + smoothing / classes if smoothing else target


def soft_targets(logits, labels, smoothing: float):
  """(n, N) target probabilities of integer labels: one-hot, smoothed."""
  return _smoothed(jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), smoothing,
                   logits.shape[-1])


def known_mean(losses, labels):
  """Multilabel: each image's mean over its known labels (0 when none is known)."""
  known = labels >= 0
  return jnp.sum(jnp.where(known, losses, 0.0), -1) / jnp.maximum(jnp.sum(known, -1), 1)


def resolve(name: str):
  """The loss function `config.loss` names: a function of this module, or "module:function"."""
  module_name, sep, function = name.rpartition(":")
  if not sep:
    found = globals().get(name)
    if name.startswith("_") or name not in NAMED or found is None:
      raise UserError(f"--config.loss={name}: not a radjax loss ({', '.join(NAMED)}); "
                      "your own is 'package.module:function'")
    return found
  try:
    module = importlib.import_module(module_name)
  except ImportError as error:
    raise UserError(f"--config.loss={name}: cannot import {module_name} ({error})") from None
  found = getattr(module, function, None)
  if not callable(found):
    raise UserError(f"--config.loss={name}: {module_name} has no function {function}")
  return found


NAMED = ("cross_entropy", "focal")
