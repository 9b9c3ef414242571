"""`radjax evaluate`: a trained run's checkpoint on a split; metrics.json, roc.png, a summary."""

from __future__ import annotations

import json
import pathlib

from radjax import data, metrics, plots, run as run_lib
from radjax.errors import UserError


def data_dir_of(trained: run_lib.Trained, data_dir=None) -> tuple[pathlib.Path, str]:
  """(data directory, where it came from): `--data`, else the absolute one the run trained on."""
  if data_dir:
    return pathlib.Path(data_dir), "--data"
  stored = trained.meta.get("data_dir")
  if stored:
    return pathlib.Path(stored), "the checkpoint"
  # Checkpoints written before the resolved directory was stored: only an absolute one is safe.
  if trained.config.data_dir and pathlib.Path(trained.config.data_dir).is_absolute():
    return pathlib.Path(trained.config.data_dir), "the checkpoint's config"
  raise UserError("the checkpoint does not record an absolute data directory: pass --data DIR")


def evaluate_workdir(workdir, data_dir=None, split: str = "val", which: str = "best",
                     out_dir=None) -> dict:
  """Evaluates a run's checkpoint on a split; writes metrics.json (and roc.png when both classes
  are present) to `out_dir` (default: the workdir). The result lists the files it wrote."""
  trained = run_lib.load(workdir, which)
  config = trained.config
  data_dir, source = data_dir_of(trained, data_dir)
  split = data.SPLIT_ALIASES.get(split.lower(), split.lower())
  folders = data.list_folders(data_dir, splits=(split,), dicom_voi=config.dicom_voi)
  if split not in folders.splits:
    raise UserError(f"{data_dir}: no {split.upper()} split folder")
  if folders.class_names != trained.class_names:
    raise UserError(f"{data_dir}: classes {folders.class_names} differ from the checkpoint's "
                    f"{trained.class_names}")
  logits, labels = trained.steps.logits_of(
      trained.variables, data.Pipeline(folders, config).eval_batches(split, config.eval_batch_size))
  result = metrics.binary_metrics(logits, labels)
  result.update({"split": split, "epoch": trained.epoch, "checkpoint": which,
                 "data_dir": str(data_dir), "data_dir_from": source,
                 "class_names": trained.class_names})
  out = pathlib.Path(out_dir or workdir)
  out.mkdir(parents=True, exist_ok=True)
  written = [out / "metrics.json"]
  if len(set(labels.tolist())) == 2:
    plots.plot_roc(logits, labels, trained.class_names, out / "roc.png",
                   f"{split.upper()} ROC, epoch {trained.epoch}")
    written.append(out / "roc.png")
  result["written"] = [str(p) for p in written]
  (out / "metrics.json").write_text(json.dumps(metrics.json_safe(result), indent=2))
  return result


def format_metrics(result: dict) -> str:
  (tn, fp), (fn, tp) = result["confusion_matrix"]
  a, b = result["class_names"]
  return (f"Data: {result['data_dir']} (from {result['data_dir_from']})\n"
          f"{result['split'].upper()} ({result['count']} images, checkpoint epoch {result['epoch']}): "
          f"loss {result['loss']:.4f}  accuracy {result['accuracy']:.3f}  AUC {result['auc']:.3f}  "
          f"sensitivity ({b}) {result['sensitivity']:.3f}  specificity ({a}) "
          f"{result['specificity']:.3f}\n"
          f"confusion matrix (rows true, columns predicted):\n"
          f"  {'':>10} {a:>10} {b:>10}\n  {a:>10} {tn:>10} {fp:>10}\n  {b:>10} {fn:>10} {tp:>10}")
