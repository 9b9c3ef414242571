"""The shortcut audit ("what predicts the label besides the anatomy"): for each property of a file
that is not its anatomy (size, aspect ratio, format, file size, brightness, the outer frame where
borders and burned-in text live, DICOM equipment attributes; recorded by `radjax.data.audit`), the
cross-validated ROC AUC of predicting the class from that property alone, over every readable
image of every split pooled. A property with an AUC near 1 separates the classes by itself, and a
model may learn it instead of the anatomy.
"""

from __future__ import annotations

import collections

import numpy as np

# A feature whose cross-validated AUC reaches this separates the classes by itself.
SHORTCUT_AUC = 0.9
SHORTCUT_MAX_FOLDS = 5
SHORTCUT_SEED = 0
SHORTCUT_TREE_DEPTH = 2  # one feature, a shallow tree: a threshold or a band, not a memorised list


def _cv_scores_numeric(x: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
  """Out-of-fold class probabilities (n, classes) from a shallow tree trained on the one feature
  `x`."""
  from sklearn.model_selection import cross_val_predict
  from sklearn.tree import DecisionTreeClassifier

  tree = DecisionTreeClassifier(max_depth=SHORTCUT_TREE_DEPTH, random_state=SHORTCUT_SEED)
  return cross_val_predict(tree, x.reshape(-1, 1), y, cv=folds, method="predict_proba")


def _cv_scores_categorical(x: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
  """Out-of-fold target encoding (n, classes): each held-out file scores each class' rate among
  the files with its value in the other folds (smoothed toward their overall rate by one
  pseudo-count; an unseen value gets that rate). Each row sums to one."""
  classes = int(y.max()) + 1
  scores = np.empty((len(y), classes))
  for train, test in folds.split(x.reshape(-1, 1), y):
    prior = np.bincount(y[train], minlength=classes) / len(train)
    members, totals = collections.defaultdict(lambda: np.zeros(classes)), collections.Counter()
    for value, label in zip(x[train], y[train]):
      totals[value] += 1
      members[value][label] += 1
    scores[test] = [(members[v] + prior) / (totals[v] + 1) if v in totals else prior
                    for v in x[test]]
  return scores


def _cv_auc(y: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of out-of-fold class probabilities: of the second class' for two classes, else the
  macro mean of every class' one-vs-rest AUC."""
  from sklearn.metrics import roc_auc_score

  if scores.shape[1] == 2:
    return float(roc_auc_score(y, scores[:, 1]))
  return float(roc_auc_score(y, scores, multi_class="ovr", average="macro"))


def _number(value: float) -> str:
  return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _per_class_detail(x: np.ndarray, y: np.ndarray, names: list[str], numeric: bool) -> str:
  """Numeric: each class's median and range. Categorical: the value whose share differs most
  between the classes, with its count in each."""
  if numeric:
    parts = []
    for label, name in enumerate(names):
      values = x[y == label].astype(np.float64)
      parts.append(f"{name} median {_number(np.median(values))} "
                   f"({_number(values.min())}..{_number(values.max())})")
    return "; ".join(parts)
  totals = [int((y == label).sum()) for label in range(len(names))]
  per_class = [collections.Counter(x[y == label].tolist()) for label in range(len(names))]

  def spread(value):
    shares = [c[value] / n for c, n in zip(per_class, totals)]
    return max(shares) - min(shares)

  value = max(sorted(set(x.tolist())), key=spread)
  return f"{value}: " + ", ".join(f"{name} {c[value]}/{n}"
                                  for name, c, n in zip(names, per_class, totals))


def shortcut_audit(records: list[dict], feature_specs) -> dict:
  """Cross-validated ROC AUC of each feature alone for the class label (three or more classes:
  the macro one-vs-rest AUC).

  records: one dict per readable image, with "class" and every key of `feature_specs`
  ((key, name, numeric) triples). Returns {"classes", "folds", "features" (sorted by AUC, highest
  first) or "skipped" (why)}.
  """
  from sklearn.model_selection import StratifiedKFold

  names = sorted({r["class"] for r in records})
  result = {"classes": names, "folds": None, "features": [], "skipped": None}
  counts = collections.Counter(r["class"] for r in records)
  if len(names) < 2:
    result["skipped"] = "fewer than two classes"
    return result
  smallest = min(counts.values())
  if smallest < 2:
    result["skipped"] = f"class '{min(counts, key=counts.get)}' has {smallest} image; " \
                        "cross-validation needs at least 2 per class"
    return result
  k = min(SHORTCUT_MAX_FOLDS, smallest)
  folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=SHORTCUT_SEED)
  result["folds"] = k
  y = np.array([names.index(r["class"]) for r in records])
  for key, name, numeric in feature_specs:
    raw = [r[key] for r in records]
    x = np.array(raw, np.float64) if numeric else np.array([str(v) for v in raw], object)
    if len(set(x.tolist())) < 2:
      value = x[0] if not numeric else f"{x[0]:.4g}"
      result["features"].append({"feature": name, "auc": 0.5, "constant": True,
                                 "detail": f"constant ({value})"})
      continue
    scores = (_cv_scores_numeric if numeric else _cv_scores_categorical)(x, y, folds)
    result["features"].append({"feature": name, "auc": round(_cv_auc(y, scores), 4),
                               "constant": False,
                               "detail": _per_class_detail(x, y, names, numeric)})
  result["features"].sort(key=lambda f: -f["auc"])  # stable: ties keep the feature order
  return result


def shortcut_report(records: list[dict], feature_specs) -> dict:
  """`shortcut_audit` as the entries of `radjax audit`'s report."""
  found = shortcut_audit(records, feature_specs)
  return {"shortcuts": found["features"], "shortcut_folds": found["folds"],
          "shortcut_classes": found["classes"], "shortcut_skipped": found["skipped"],
          "shortcut_auc_threshold": SHORTCUT_AUC}
