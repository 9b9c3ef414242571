"""Logits <-> probabilities in NumPy float64, without scikit-learn: `radjax predict` imports only
this (the scores in `classification` import scikit-learn, a second of a prediction's start-up)."""

from __future__ import annotations

import numpy as np


def sigmoid(logits) -> np.ndarray:
  with np.errstate(over="ignore"):  # exp(-x) = inf for x < -709: the probability is 0, exactly
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def logit(probability: float) -> float:
  return float(np.log(probability) - np.log1p(-probability))


def softmax(logits) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


def probabilities(logits) -> np.ndarray:
  """(n,) p(second class) of binary logits, or (n, N) class probabilities of multiclass ones."""
  return sigmoid(logits) if np.ndim(logits) == 1 else softmax(logits)




def decided_labels(logits, task: str, class_names, threshold_logit=None) -> list[str]:
  """Each image's decision from its logits, as `radjax predict` and `evaluate` decide: binary,
  the second class above `threshold_logit`; multiclass, the most probable class; multilabel, the
  labels above their own thresholds (a dict of each label's logit) "+"-joined, or "none"."""
  logits = np.asarray(logits, np.float64)
  if task == "binary":
    return [class_names[int(z > threshold_logit)] for z in logits]
  if task == "multiclass":
    return [class_names[int(k)] for k in np.argmax(logits, axis=-1)]
  cuts = np.array([threshold_logit[n] for n in class_names])
  return ["+".join(n for n, on in zip(class_names, row) if on) or "none" for row in logits > cuts]
