"""Classification metrics as numbers (scikit-learn), from logits and labels.

The positive class is label 1, the second class name. An image is called positive when its logit
is above 0 (probability above 0.5): a logit of exactly 0 is called the first class.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

THRESHOLD_LOGIT = 0.0  # probability 0.5


def sigmoid(logits) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def predicted_labels(logits) -> np.ndarray:
  return (np.asarray(logits) > THRESHOLD_LOGIT).astype(int)


def log_loss_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean binary cross-entropy, computed from logits so that large |logit| stays finite."""
  logits = np.asarray(logits, np.float64)
  return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def binary_metrics(logits, labels) -> dict:
  """Loss, accuracy, ROC AUC, sensitivity and specificity at 0.5, and the confusion matrix.

  AUC is computed from the logits: a float64 sigmoid saturates to exactly 1.0 above a logit of
  ~37, which would turn different scores into ties. NaN when only one class is present.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  predicted = predicted_labels(logits)
  tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
  both = len(np.unique(labels)) == 2
  return {
      "loss": log_loss_from_logits(logits, labels),
      "accuracy": float(skm.accuracy_score(labels, predicted)),
      "auc": float(skm.roc_auc_score(labels, logits)) if both else float("nan"),
      "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
      "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
      "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
      "count": int(len(labels)),
  }


def json_safe(tree):
  """JSON has no NaN: null instead."""
  if isinstance(tree, dict):
    return {k: json_safe(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return [json_safe(v) for v in tree]
  return None if isinstance(tree, float) and math.isnan(tree) else tree
