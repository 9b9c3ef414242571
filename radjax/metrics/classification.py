"""Classification metrics as numbers (scikit-learn), from logits and labels.

The positive class is label 1, the second class name. An image is called positive when its logit
is above the threshold (default 0, probability 0.5): a logit equal to it is the first class.

How far to trust a figure: `bootstrap_intervals` (stratified percentile bootstrap), `calibration`
(Brier score, expected calibration error) and `operating_point` (a threshold chosen on validation
by Youden's J or for a target sensitivity).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

from radjax.metrics.probabilities import logit, probabilities, sigmoid, softmax  # noqa: F401

THRESHOLD_LOGIT = 0.0  # probability 0.5


def predicted_labels(logits, threshold_logit: float = THRESHOLD_LOGIT) -> np.ndarray:
  return (np.asarray(logits) > threshold_logit).astype(int)


def log_loss_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean binary cross-entropy, computed from logits so that large |logit| stays finite."""
  logits = np.asarray(logits, np.float64)
  return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def binary_metrics(logits, labels, threshold_logit: float = THRESHOLD_LOGIT) -> dict:
  """Loss, accuracy, ROC AUC, sensitivity and specificity at the threshold (default 0.5), and the
  confusion matrix.

  AUC is computed from the logits: a float64 sigmoid saturates to exactly 1.0 above a logit of
  ~37, which would turn different scores into ties. NaN when only one class is present.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  predicted = predicted_labels(logits, threshold_logit)
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


def multiclass_metrics(logits, labels) -> dict:
  """Loss (softmax cross-entropy), accuracy, the N x N confusion matrix (rows true, columns
  predicted: the most probable class), and per class, one-vs-rest: ROC AUC, sensitivity (recall)
  and specificity of the decision. "auc", "sensitivity" and "specificity" are their macro means.

  AUC is scikit-learn's on each class' logit minus the log-sum-exp of the others' (its log-odds,
  which keeps saturated probabilities apart); NaN for a class absent from, or the only class of,
  the labels, and the macro mean is over the defined ones.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  n_classes = logits.shape[1]
  log_norm = np.logaddexp.reduce(logits, axis=1)
  predicted = np.argmax(logits, axis=1)
  matrix = skm.confusion_matrix(labels, predicted, labels=np.arange(n_classes))
  per_class = []
  for c in range(n_classes):
    positive = labels == c
    others = np.delete(logits, c, axis=1)
    log_odds = logits[:, c] - np.logaddexp.reduce(others, axis=1)
    tp, fn = matrix[c, c], matrix[c].sum() - matrix[c, c]
    fp = matrix[:, c].sum() - tp
    tn = matrix.sum() - tp - fn - fp
    per_class.append({
        "auc": float(skm.roc_auc_score(positive, log_odds))
               if 0 < positive.sum() < len(labels) else float("nan"),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "count": int(positive.sum())})

  def macro(key):
    values = [m[key] for m in per_class if not math.isnan(m[key])]
    return float(np.mean(values)) if values else float("nan")

  return {
      "loss": float(np.mean(log_norm - logits[np.arange(len(labels)), labels])),
      "accuracy": float(skm.accuracy_score(labels, predicted)),
      "auc": macro("auc"), "sensitivity": macro("sensitivity"), "specificity": macro("specificity"),
      "per_class": per_class,
      "confusion_matrix": matrix.astype(int).tolist(),
      "count": int(len(labels)),
  }


def multilabel_metrics(logits, labels) -> dict:
  """K independent labels ((n, K) logits; labels 1/0, -1 unknown): per label, `binary_metrics` of
  the images whose label is known (AUC, sensitivity and specificity at probability 0.5, and the
  positives among them as "count"); "auc", "sensitivity" and "specificity" are the macro means of
  the defined ones; loss and accuracy are over every known label (the training loss' mean)."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  per_label = []
  for k in range(labels.shape[1]):
    known = labels[:, k] >= 0
    if known.any():
      m = binary_metrics(logits[known, k], labels[known, k])
    else:
      m = {key: float("nan") for key in ("auc", "sensitivity", "specificity")}
    per_label.append({"auc": m["auc"], "sensitivity": m["sensitivity"],
                      "specificity": m["specificity"], "count": int(np.sum(labels[:, k] == 1)),
                      "known": int(known.sum())})
  known = labels >= 0
  losses = np.logaddexp(0.0, logits) - (labels == 1) * logits
  per_image = np.sum(np.where(known, losses, 0.0), 1) / np.maximum(known.sum(1), 1)

  def macro(key):
    values = [m[key] for m in per_label if not math.isnan(m[key])]
    return float(np.mean(values)) if values else float("nan")

  return {
      "loss": float(np.mean(per_image)),
      "accuracy": float(np.sum(((logits > 0) == (labels == 1)) & known) / max(known.sum(), 1)),
      "auc": macro("auc"), "sensitivity": macro("sensitivity"), "specificity": macro("specificity"),
      "per_class": per_label,
      "count": int(len(labels)),
  }


def classification_metrics(logits, labels) -> dict:
  """`binary_metrics` of (n,) logits, `multiclass_metrics` of (n, N) ones with (n,) labels,
  `multilabel_metrics` with (n, K) labels."""
  if np.ndim(labels) == 2:
    return multilabel_metrics(logits, labels)
  return binary_metrics(logits, labels) if np.ndim(logits) == 1 else multiclass_metrics(logits, labels)


INTERVAL_METRICS = ("auc", "accuracy", "sensitivity", "specificity")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_CHUNK = 100  # resamples scored together


def bootstrap_intervals(logits, labels, threshold_logit: float = THRESHOLD_LOGIT,
                        resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95, seed: int = 0) -> dict:
  """Percentile bootstrap intervals {metric: [low, high]} of AUC, accuracy, sensitivity and
  specificity. Stratified: each resample draws the positives and the negatives separately, with
  replacement, so it keeps the split's class counts (and AUC stays defined). Seeded: the same
  call gives the same interval. With 10 validation images the interval is wide, as it should be.

  The resamples are scored together (`_resampled_metrics`), with the figures `binary_metrics`
  gives each of them (tested): calling scikit-learn 1,000 times took 8 s per summary."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  groups = [np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)]
  return _percentile_intervals(
      _stratified(groups), lambda i: _resampled_metrics(logits[i], labels[i], threshold_logit),
      resamples, level, seed)


def _stratified(groups: list[np.ndarray]):
  """rng, count -> (count, n) resampled indices: each group drawn with replacement, its size kept."""
  groups = [g for g in groups if len(g)]
  return lambda rng, count: np.stack([np.concatenate([rng.choice(g, len(g)) for g in groups])
                                      for _ in range(count)])


def _percentile_intervals(draw, score, resamples: int, level: float, seed: int) -> dict:
  """Percentile intervals {metric: [low, high]} of INTERVAL_METRICS over `resamples` resamples:
  `draw(rng, count)` gives (count, n) indices, `score(indices)` each resample's figures (arrays of
  count). BOOTSTRAP_CHUNK resamples at a time: memory ~ chunk x images, not 1000 x images. NaN when
  a figure is undefined in any resample."""
  rng = np.random.default_rng(seed)
  chunks = [score(draw(rng, min(BOOTSTRAP_CHUNK, resamples - start)))
            for start in range(0, resamples, BOOTSTRAP_CHUNK)]
  values = {name: np.concatenate([c[name] for c in chunks]) for name in INTERVAL_METRICS}
  tail = (1 - level) / 2 * 100
  return {name: ([float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
                 if np.all(np.isfinite(v)) else [float("nan"), float("nan")])
          for name, v in values.items()}


def _resampled_metrics(logits: np.ndarray, labels: np.ndarray, threshold_logit: float) -> dict:
  """`binary_metrics`' AUC, accuracy, sensitivity and specificity of every row of (R, n) logits
  and labels."""
  positive, predicted = labels == 1, logits > threshold_logit
  return {**_resampled_binary(logits, positive, ~positive, predicted),
          "accuracy": (predicted == positive).mean(1)}


def _resampled_binary(scores, positive, negative, predicted) -> dict:
  """AUC, sensitivity and specificity of each row (axis 0) of (R, n, ...) scores. AUC is the
  Mann-Whitney statistic from average ranks along axis 1: ties count one half, as in
  scikit-learn's roc_auc_score; NaN without positives and negatives. Entries neither positive nor
  negative (unknown) must score above every other, so the others keep their ranks."""
  from scipy.stats import rankdata

  n_pos, n_neg = positive.sum(1), negative.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    ranks = rankdata(scores, axis=1)
    auc = ((ranks * positive).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return {"auc": np.where((n_pos > 0) & (n_neg > 0), auc, np.nan),
            "sensitivity": (predicted & positive).sum(1) / n_pos,
            "specificity": (~predicted & negative).sum(1) / n_neg}


def multiclass_bootstrap_intervals(logits, labels, resamples: int = BOOTSTRAP_RESAMPLES,
                                   level: float = 0.95, seed: int = 0) -> dict:
  """Percentile bootstrap intervals {metric: [low, high]} of `multiclass_metrics`' macro
  one-vs-rest AUC, accuracy, and macro sensitivity and specificity of (n, N) logits. Stratified
  by class, as `bootstrap_intervals`: each resample keeps every class' count, so a class' AUC is
  defined in every resample where it is in the data (its absence leaves it out of every macro
  mean, as in `multiclass_metrics`)."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  groups = [np.flatnonzero(labels == c) for c in range(logits.shape[1])]
  return _percentile_intervals(
      _stratified(groups), lambda i: _resampled_macro_metrics(logits[i], labels[i]),
      resamples, level, seed)


def _resampled_macro_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """`multiclass_metrics`' macro AUC, accuracy, macro sensitivity and specificity of every row
  of (R, n, N) logits and (R, n) labels (AUC from average ranks of each class' log-odds)."""
  predicted = np.argmax(logits, axis=-1)
  per_class = []
  for c in range(logits.shape[-1]):
    positive = labels == c
    log_odds = logits[..., c] - np.logaddexp.reduce(np.delete(logits, c, axis=-1), axis=-1)
    per_class.append(_resampled_binary(log_odds, positive, ~positive, predicted == c))
  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a figure no class defines
    macro = {k: np.nanmean(np.stack([m[k] for m in per_class]), axis=0) for k in per_class[0]}
  return {**macro, "accuracy": (predicted == labels).mean(1)}


def multilabel_bootstrap_intervals(logits, labels, resamples: int = BOOTSTRAP_RESAMPLES,
                                   level: float = 0.95, seed: int = 0) -> dict:
  """Percentile bootstrap intervals {metric: [low, high]} of `multilabel_metrics`' macro AUC,
  accuracy (of the known labels), macro sensitivity and specificity. Images are resampled whole,
  with all their labels (labels of one image are not independent); a label without both values
  among a resample's known ones is left out of that resample's macro means, as
  `multilabel_metrics` leaves it out."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  n = len(labels)
  return _percentile_intervals(
      lambda rng, count: rng.integers(0, n, (count, n)),
      lambda i: _resampled_multilabel_metrics(logits[i], labels[i]), resamples, level, seed)


def _resampled_multilabel_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """`multilabel_metrics`' macro AUC, accuracy, macro sensitivity and specificity of every row of
  (R, n, K) logits and 1/0/-1 labels. An unknown label is ranked above every known one, so the
  known ones keep their ranks among themselves (the AUC of the known images alone)."""
  known, positive = labels >= 0, labels == 1
  # The unknown entries scored above every known one: the AUC of the known images alone.
  per_label = _resampled_binary(np.where(known, logits, np.inf), positive, known & ~positive,
                                logits > THRESHOLD_LOGIT)
  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no label is defined
    macro = {k: np.nanmean(v, axis=1) for k, v in per_label.items()}
  right = ((logits > 0) == positive) & known
  return {**macro, "accuracy": right.sum((1, 2)) / np.maximum(known.sum((1, 2)), 1)}


def exact_intervals(result: dict, level: float = 0.95) -> dict:
  """Clopper-Pearson intervals {metric: [low, high]} of accuracy, sensitivity and specificity
  from the counts of `binary_metrics`' result (of accuracy alone from `multiclass_metrics`').
  Unlike the bootstrap, they do not collapse when every image is right: 10 of 10 correct gives
  0.69-1.00 (resampling a perfect result can only give perfect results)."""
  from scipy.stats import binomtest

  matrix = np.asarray(result["confusion_matrix"])
  counts = {"accuracy": (int(np.trace(matrix)), int(matrix.sum()))}
  if "per_class" not in result:  # binary: the second class is the positive one
    (tn, fp), (fn, tp) = matrix.tolist()
    counts.update({"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp)})
  intervals = {}
  for name, (k, n) in counts.items():
    ci = binomtest(k, n).proportion_ci(level, "exact") if n else None
    intervals[name] = [ci.low, ci.high] if ci else [float("nan"), float("nan")]
  return {k: [float(a), float(b)] for k, (a, b) in intervals.items()}


def calibration(logits, labels, bins: int = 10) -> dict:
  """Brier score, expected calibration error (equal-width probability bins, weighted by their
  counts) and the reliability table [{"low", "high", "count", "mean_probability", "fraction"}]."""
  probability = sigmoid(logits)
  labels = np.asarray(labels).astype(int)
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
  table, ece = [], 0.0
  for b in range(bins):
    members = which == b
    if members.any():
      mean_p, fraction = float(probability[members].mean()), float(labels[members].mean())
      ece += members.mean() * abs(mean_p - fraction)
      table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
                    "mean_probability": mean_p, "fraction": fraction})
  return {"brier": float(skm.brier_score_loss(labels, probability)), "ece": float(ece),
          "bins": table}


def operating_point(logits, labels, target_sensitivity: float | None = None) -> dict:
  """A decision threshold chosen on (validation) logits: the one maximising Youden's J
  (sensitivity + specificity - 1), or the highest whose sensitivity reaches `target_sensitivity`.

  The threshold lies halfway between two neighbouring scores, so the `>` rule calls the chosen
  scores positive and nothing depends on ties at the threshold. Returned as a logit and a
  probability, with the sensitivity and specificity it gives on these data.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  scores = np.unique(logits)  # ascending
  # Candidate k calls positive every score >= scores[k]; below all of them calls all positive.
  cuts = np.concatenate([[scores[0] - 1.0], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1.0]])
  positive, negative = labels == 1, labels == 0
  sensitivity = np.array([np.mean(logits[positive] > c) for c in cuts])
  specificity = np.array([np.mean(logits[negative] <= c) for c in cuts])
  if target_sensitivity is None:
    k = int(np.argmax(sensitivity + specificity - 1))  # ties: the lowest threshold
    rule = "Youden's J"
  else:
    reaching = np.flatnonzero(sensitivity >= target_sensitivity)
    k = int(reaching[-1])  # the highest threshold that still reaches the target
    rule = f"sensitivity >= {target_sensitivity:g}"
  return {"threshold_logit": float(cuts[k]), "threshold": float(sigmoid(cuts[k])), "rule": rule,
          "sensitivity": float(sensitivity[k]), "specificity": float(specificity[k]),
          "count": int(len(labels))}


def json_safe(tree):
  """JSON has no NaN: null instead."""
  if isinstance(tree, dict):
    return {k: json_safe(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return [json_safe(v) for v in tree]
  return None if isinstance(tree, float) and math.isnan(tree) else tree


def one_vs_rest(logits, labels, k: int, multilabel: bool):
  """One class' (label's) binary problem: (logits, 0/1 truths). Multilabel: the label's logit over
  the images where it is known. Multiclass: the class' log-odds, log p / (1 - p) of its softmax
  probability, over every image."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  if multilabel:
    known = labels[:, k] >= 0
    return logits[known, k], labels[known, k].astype(int)
  log_odds = logits[:, k] - np.logaddexp.reduce(np.delete(logits, k, axis=1), axis=1)
  return log_odds, (labels == k).astype(int)


def per_class_intervals(logits, labels, k: int, multilabel: bool, seed: int) -> dict:
  """Bootstrap 95% intervals of one class' (label's) figures. Multilabel: the label is a binary
  problem over the images where it is known, so AUC, accuracy, sensitivity and specificity all get
  one. Multiclass: the class' one-vs-rest AUC on its log-odds only (its sensitivity and
  specificity follow the most probable class, not a threshold on one score)."""
  scores, truth = one_vs_rest(logits, labels, k, multilabel)
  intervals = bootstrap_intervals(scores, truth, seed=seed)
  return intervals if multilabel else {"auc": intervals["auc"]}
