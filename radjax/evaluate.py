"""Metrics (scikit-learn), the ROC curve and the training curves (matplotlib), and `radjax evaluate`."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
from sklearn import metrics as skm

THRESHOLD = 0.5  # probability above which an image is called the second class


def log_loss_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean binary cross-entropy, computed from logits so that large |logit| stays finite."""
  logits = logits.astype(np.float64)
  return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def binary_metrics(logits, labels) -> dict:
  """Loss, accuracy, ROC AUC, sensitivity and specificity at 0.5, and the confusion matrix.

  The positive class is label 1 (the second class name). AUC is NaN when only one class is present.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels).astype(int)
  probability = 1.0 / (1.0 + np.exp(-logits))
  predicted = (probability > THRESHOLD).astype(int)
  tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
  both = len(np.unique(labels)) == 2
  return {
      "loss": log_loss_from_logits(logits, labels),
      "accuracy": float(skm.accuracy_score(labels, predicted)),
      "auc": float(skm.roc_auc_score(labels, probability)) if both else float("nan"),
      "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
      "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
      "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
      "count": int(len(labels)),
  }


def plot_roc(logits, labels, class_names, path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fpr, tpr, _ = skm.roc_curve(labels, logits)
  auc = skm.auc(fpr, tpr)
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot(fpr, tpr, lw=2, label=f"ROC (AUC = {auc:.3f})")
  ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="chance")
  ax.set(xlabel=f"False positive rate (1 - specificity, {class_names[0]})",
         ylabel=f"True positive rate (sensitivity, {class_names[1]})", title=title,
         xlim=(0, 1), ylim=(0, 1.02))
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(history: list[dict], path) -> None:
  """The paper's Fig. 9: accuracy and loss per epoch, training and validation."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  epochs = [h["epoch"] for h in history]
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key in zip(axes, ("accuracy", "loss")):
    ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {key}")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label=f"val {key}")
    ax.set(xlabel="epoch", ylabel=key, title=f"model {key}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def evaluate_workdir(workdir, data_dir=None, split: str = "val", which: str = "best",
                     out_dir=None) -> dict:
  """Evaluates a run's checkpoint on a split; writes metrics.json and roc.png to `out_dir`."""
  from radjax import checkpoints, config as config_lib, data, train
  from radjax.errors import UserError

  variables, meta, epoch = checkpoints.load_for_inference(workdir, which)
  config = config_lib.config_from_dict(meta["config"])
  data_dir = data_dir or config.data_dir
  if not data_dir:
    raise UserError("no data directory: pass --data DIR")
  split = data.SPLIT_ALIASES.get(split.lower(), split.lower())
  folders = data.list_folders(data_dir, splits=(split,), dicom_voi=config.dicom_voi)
  if split not in folders.splits:
    raise UserError(f"{data_dir}: no {split.upper()} split folder")
  if folders.class_names != meta["class_names"]:
    raise UserError(f"{data_dir}: classes {folders.class_names} differ from the checkpoint's "
                    f"{meta['class_names']}")
  steps = train.Steps(train.create_model(config), None, train.make_mesh())
  logits, labels = train.evaluate_split(steps, steps.replicate(variables),
                                        data.Pipeline(folders, config), split,
                                        config.eval_batch_size)
  result = binary_metrics(logits, labels)
  result.update({"split": split, "epoch": epoch, "checkpoint": which, "data_dir": str(data_dir),
                 "class_names": meta["class_names"]})
  out = pathlib.Path(out_dir or workdir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "metrics.json").write_text(json.dumps(_finite(result), indent=2))
  if len(np.unique(labels)) == 2:
    plot_roc(logits, labels, meta["class_names"], out / "roc.png",
             f"{split.upper()} ROC, epoch {epoch}")
  return result


def _finite(tree):
  """JSON has no NaN: write null instead."""
  if isinstance(tree, dict):
    return {k: _finite(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return [_finite(v) for v in tree]
  return None if isinstance(tree, float) and math.isnan(tree) else tree


def format_metrics(result: dict) -> str:
  (tn, fp), (fn, tp) = result["confusion_matrix"]
  a, b = result["class_names"]
  return (f"{result['split'].upper()} ({result['count']} images, checkpoint epoch {result['epoch']}): "
          f"loss {result['loss']:.4f}  accuracy {result['accuracy']:.3f}  AUC {result['auc']:.3f}  "
          f"sensitivity {result['sensitivity']:.3f}  specificity {result['specificity']:.3f}\n"
          f"confusion matrix (rows true, columns predicted):\n"
          f"  {'':>10} {a:>10} {b:>10}\n  {a:>10} {tn:>10} {fp:>10}\n  {b:>10} {fn:>10} {tp:>10}")
