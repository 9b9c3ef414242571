"""Figures (matplotlib, no pyplot state): the training curves, ROC curves, calibration."""

from __future__ import annotations

from sklearn import metrics as skm


def _figure(width: float, height: float):
  from matplotlib.figure import Figure  # the Agg canvas, no global backend state

  return Figure(figsize=(width, height), layout="tight")


def plot_roc(logits, labels, class_names, path, title: str) -> None:
  fpr, tpr, _ = skm.roc_curve(labels, logits)
  fig = _figure(5, 5)
  ax = fig.add_subplot()
  ax.plot(fpr, tpr, lw=2, label=f"ROC (AUC = {skm.auc(fpr, tpr):.3f})")
  ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="chance")
  ax.set(xlabel=f"False positive rate (1 - specificity, {class_names[0]})",
         ylabel=f"True positive rate (sensitivity, {class_names[1]})", title=title,
         xlim=(0, 1), ylim=(0, 1.02))
  ax.legend(loc="lower right")
  fig.savefig(path, dpi=120)


def plot_roc_per_class(logits, labels, class_names, path, title: str) -> None:
  """One-vs-rest ROC curve of every class present in `labels` (multiclass logits, (n, N))."""
  import numpy as np

  from radjax.metrics import classification as metrics

  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  per_class = metrics.multiclass_metrics(logits, labels)["per_class"]
  curves = []
  for c, name in enumerate(class_names):
    if not 0 < np.sum(labels == c) < len(labels):
      continue  # no curve without positives and negatives
    log_odds = logits[:, c] - np.logaddexp.reduce(np.delete(logits, c, axis=1), axis=1)
    curves.append((labels == c, log_odds, f"{name} vs rest (AUC = {per_class[c]['auc']:.3f})"))
  _plot_roc_curves(curves, path, title)


def plot_roc_per_label(logits, labels, label_names, path, title: str) -> None:
  """The ROC curve of every label (multilabel (n, K) logits and 1/0/-1 labels), each over the
  images where it is known and both values occur."""
  import numpy as np

  from radjax.metrics import classification as metrics

  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  per_label = metrics.multilabel_metrics(logits, labels)["per_class"]
  curves = []
  for k, name in enumerate(label_names):
    known = labels[:, k] >= 0
    if len(np.unique(labels[known, k])) < 2:
      continue  # no curve without positives and negatives
    curves.append((labels[known, k] == 1, logits[known, k],
                   f"{name} (AUC = {per_label[k]['auc']:.3f})"))
  _plot_roc_curves(curves, path, title)


def _plot_roc_curves(curves, path, title: str) -> None:
  """One figure of ROC curves, each (truths, scores, legend label), and the chance line."""
  fig = _figure(5.5, 5.5)
  ax = fig.add_subplot()
  for truths, scores, label in curves:
    fpr, tpr, _ = skm.roc_curve(truths, scores)
    ax.plot(fpr, tpr, lw=2, label=label)
  ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="chance")
  ax.set(xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)",
         title=title, xlim=(0, 1), ylim=(0, 1.02))
  ax.legend(loc="lower right", fontsize=8)
  fig.savefig(path, dpi=120)


def plot_curves(history: list[dict], path) -> None:
  """The paper's Fig. 9 (accuracy and loss per epoch, training and validation) and the validation
  AUC, which picks the best checkpoint (marked)."""
  import math

  from matplotlib.ticker import MaxNLocator

  epochs = [h["epoch"] for h in history]
  fig = _figure(14, 4)
  for k, key in enumerate(("accuracy", "loss")):
    ax = fig.add_subplot(1, 3, k + 1)
    ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {key}")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label=f"val {key}")
    ax.set(xlabel="epoch", ylabel=key, title=f"model {key}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
  ax = fig.add_subplot(1, 3, 3)
  aucs = [h.get("val_auc", float("nan")) for h in history]
  ax.plot(epochs, aucs, "s-", color="tab:green", label="val AUC")
  ranked = [(a, -h["val_loss"], h["epoch"]) for a, h in zip(aucs, history) if not math.isnan(a)]
  if ranked:  # the best checkpoint: highest AUC, then lowest loss (radjax.training.checkpoints)
    best = max(ranked)
    ax.plot([best[2]], [best[0]], "*", ms=16, color="gold", mec="black",
            label=f"best checkpoint (epoch {best[2]})")
  ax.set(xlabel="epoch", ylabel="AUC", title="validation AUC (picks the best checkpoint)",
         ylim=(-0.02, 1.02))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.savefig(path, dpi=120)


def plot_calibration(table: list[dict], path, title: str, positive: str = "positive") -> None:
  """Reliability diagram: observed fraction of the `positive` class against its mean predicted
  probability, per probability bin, each bin labelled with its number of images."""
  fig = _figure(5, 5)
  ax = fig.add_subplot()
  ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfectly calibrated")
  x, y = [b["mean_probability"] for b in table], [b["fraction"] for b in table]
  ax.scatter(x, y, s=[20 + 20 * b["count"] for b in table], zorder=3,
             label="bins (area ~ images)")
  ax.plot(x, y, lw=1)
  for b, bx, by in zip(table, x, y):
    ax.annotate(f"n={b['count']}", (bx, by), textcoords="offset points", xytext=(6, -12),
                fontsize=8)
  ax.set(xlabel=f"mean predicted p({positive})", ylabel=f"observed fraction {positive}",
         title=title, xlim=(0, 1), ylim=(-0.02, 1.02))
  ax.legend(loc="upper left")
  fig.savefig(path, dpi=120)
