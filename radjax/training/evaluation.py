"""Evaluating a trained run's checkpoint on a split: metrics with intervals, calibration, the ROC
curve and, on VAL, the operating point (`radjax evaluate`; `stress` and `cv` use `data_dir_of`).

Every figure comes with a seeded, stratified bootstrap 95% interval. On the validation split the
run's operating point (the decision threshold, Youden's J or a target sensitivity) is chosen and
stored as `WORKDIR/operating_point.json` (a multilabel run: one per label, over the images where
the label is known); `predict` uses it unless given `--threshold`, and evaluating another split
reports its metrics at the stored threshold(s) too. A multiclass run calls the most probable class:
it has none.
"""

from __future__ import annotations

import json
import pathlib

from radjax.data import datasets, listing
from radjax.errors import UserError
from radjax.metrics import classification as metrics, figures as plots
from radjax.metrics.classification import one_vs_rest, per_class_intervals
from radjax.training import run as run_lib
from radjax.training.decisions import bound_operating_point, store_point


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
                     out_dir=None, target_sensitivity: float | None = None) -> dict:
  """Evaluates a run's checkpoint on a split; writes metrics.json, roc.png and calibration.png to
  `out_dir` (default: the workdir), and on VAL the operating point to the workdir. The result
  lists the files it wrote."""
  if target_sensitivity is not None and not 0 < target_sensitivity <= 1:
    raise UserError(f"--target-sensitivity {target_sensitivity}: expected 0 < value <= 1")
  trained = run_lib.load(workdir, which)
  if trained.task == "multiclass" and target_sensitivity is not None:
    raise UserError(f"--target-sensitivity {target_sensitivity}: a multiclass run calls the most "
                    "probable class; operating points are for binary and multilabel runs")
  config = trained.config
  data_dir, source = data_dir_of(trained, data_dir)
  split = listing.SPLIT_ALIASES.get(split.lower(), split.lower())
  pipeline = datasets.open_pipeline(data_dir, config, splits=(split,))
  if split not in pipeline.examples:
    raise UserError(f"{data_dir}: no {split.upper()} split folder")
  if pipeline.class_names != trained.class_names:
    raise UserError(f"{data_dir}: classes {pipeline.class_names} differ from the checkpoint's "
                    f"{trained.class_names}")
  logits, labels = trained.steps.logits_of(
      trained.variables, pipeline.eval_batches(split, config.eval_batch_size))
  out = pathlib.Path(out_dir or workdir)
  out.mkdir(parents=True, exist_ok=True)
  own_data = (source != "--data" or not trained.meta.get("data_dir")
              or data_dir.resolve() == pathlib.Path(trained.meta["data_dir"]).resolve())
  binding = {"epoch": trained.epoch, "checkpoint": which, "data_dir": str(data_dir.resolve())}
  if trained.task != "binary":
    result = _evaluate_per_class(trained, logits, labels, split, which, data_dir, source, out)
    if trained.task == "multilabel":
      _label_operating_points(result, trained, logits, labels, split, binding, workdir, out_dir,
                              own_data, target_sensitivity)
    (out / "metrics.json").write_text(json.dumps(metrics.json_safe(result), indent=2))
    return result
  result = metrics.binary_metrics(logits, labels)
  result["intervals"] = metrics.bootstrap_intervals(logits, labels, seed=config.seed)
  result["exact_intervals"] = metrics.exact_intervals(result)
  result["calibration"] = metrics.calibration(logits, labels)
  written = [out / "metrics.json"]
  if split == "val":
    point = {**metrics.operating_point(logits, labels, target_sensitivity), **binding}
    stored = store_point(point, workdir, out_dir, own_data)
    if stored is None:
      result["operating_point_note"] = ("chosen on other data than the run's own: not stored "
                                        "(pass --out to keep it)")
    else:
      written.append(stored)
  else:
    point, why = bound_operating_point(workdir, trained.epoch, trained.meta)
    if why:
      result["operating_point_note"] = f"not applied: {why}"
  if point is not None:
    at_point = metrics.binary_metrics(logits, labels, point["threshold_logit"])
    result["operating_point"] = {
        **point, "on_this_split": {k: at_point[k] for k in
                                   ("accuracy", "sensitivity", "specificity", "confusion_matrix")},
        "intervals": metrics.bootstrap_intervals(logits, labels, point["threshold_logit"],
                                                 seed=config.seed),
        "exact_intervals": metrics.exact_intervals(at_point)}
  result.update({"task": "binary", "split": split, "epoch": trained.epoch, "checkpoint": which,
                 "data_dir": str(data_dir), "data_dir_from": source,
                 "class_names": trained.class_names})
  plots.plot_roc(logits, labels, trained.class_names, out / "roc.png",
                 f"{split.upper()} ROC, epoch {trained.epoch}")
  plots.plot_calibration(result["calibration"]["bins"], out / "calibration.png",
                         f"{split.upper()} calibration, epoch {trained.epoch}",
                         positive=trained.class_names[1])
  written += [out / "roc.png", out / "calibration.png"]
  result["written"] = [str(p) for p in written]
  (out / "metrics.json").write_text(json.dumps(metrics.json_safe(result), indent=2))
  return result


def _evaluate_per_class(trained, logits, labels, split, which, data_dir, source, out) -> dict:
  """Multiclass: per-class one-vs-rest figures, their macro means and the confusion matrix.
  Multilabel: per-label figures over the images whose label is known, and their macro means.
  metrics.json and roc.png (a curve per class or label); the caller writes metrics.json. The
  figures are at the most probable class, or each label at probability 0.5 (a multilabel run's
  operating points come after, `_label_operating_points`)."""
  multilabel = trained.task == "multilabel"
  result = (metrics.multilabel_metrics if multilabel else metrics.multiclass_metrics)(logits, labels)
  for k, m in enumerate(result["per_class"]):
    m["intervals"] = per_class_intervals(logits, labels, k, multilabel, trained.config.seed)
    scores, truth = one_vs_rest(logits, labels, k, multilabel)
    if len(truth):  # the class' (label's) probability against its frequency: Brier, ECE, bins
      m["calibration"] = metrics.calibration(scores, truth)
  # The macro figures' intervals (multiclass: and accuracy's exact one).
  result["intervals"] = (metrics.multilabel_bootstrap_intervals if multilabel
                         else metrics.multiclass_bootstrap_intervals)(logits, labels,
                                                                      seed=trained.config.seed)
  result["exact_intervals"] = {} if multilabel else metrics.exact_intervals(result)
  result.update({"task": trained.task, "split": split, "epoch": trained.epoch,
                 "checkpoint": which, "data_dir": str(data_dir), "data_dir_from": source,
                 "class_names": trained.class_names})
  if multilabel:
    plots.plot_roc_per_label(logits, labels, trained.class_names, out / "roc.png",
                             f"{split.upper()} ROC per label, epoch {trained.epoch}")
  else:
    plots.plot_roc_per_class(logits, labels, trained.class_names, out / "roc.png",
                             f"{split.upper()} ROC per class, epoch {trained.epoch}")
  result["written"] = [str(out / "metrics.json"), str(out / "roc.png")]
  return result


def _label_operating_points(result, trained, logits, labels, split, binding, workdir, out_dir,
                            own_data, target_sensitivity) -> None:
  """A multilabel run's operating points: on VAL, each label's threshold chosen over the images
  where it is known (`metrics.operating_point`; a label VAL holds only one value of keeps
  probability 0.5) and stored for predict; on another split, the stored ones. Adds each label's
  figures at its threshold, with their bootstrap intervals, to `result`."""
  names = trained.class_names
  if split == "val":
    chosen = {}
    for k, name in enumerate(names):
      scores, truth = one_vs_rest(logits, labels, k, multilabel=True)
      chosen[name] = (metrics.operating_point(scores, truth, target_sensitivity)
                      if len(set(truth.tolist())) == 2 else None)
    rule = "Youden's J" if target_sensitivity is None else f"sensitivity >= {target_sensitivity:g}"
    point = {"task": "multilabel", "rule": rule, "labels": chosen, **binding}
    path = store_point(point, workdir, out_dir, own_data)
    if path is None:
      result["operating_point_note"] = ("chosen on other data than the run's own: not stored "
                                        "(pass --out to keep it)")
    else:
      result["written"].insert(1, str(path))
  else:
    point, why = bound_operating_point(workdir, trained.epoch, trained.meta)
    if why:
      result["operating_point_note"] = f"not applied: {why}"
    if point is None or point.get("task") != "multilabel":
      return
  on_split = {}
  for k, name in enumerate(names):
    chosen = point["labels"].get(name)
    scores, truth = one_vs_rest(logits, labels, k, multilabel=True)
    if chosen is None or not len(truth):
      on_split[name] = None
      continue
    at = metrics.binary_metrics(scores, truth, chosen["threshold_logit"])
    on_split[name] = {**{key: at[key] for key in ("accuracy", "sensitivity", "specificity",
                                                  "confusion_matrix")},
                      "intervals": metrics.bootstrap_intervals(scores, truth,
                                                               chosen["threshold_logit"],
                                                               seed=trained.config.seed)}
  result["operating_point"] = {**point, "on_this_split": on_split}


def label_thresholds(point: dict, names) -> dict[str, float]:
  """A multilabel operating point's probability threshold per label (0.5 for a label without one)."""
  return {n: (point["labels"].get(n) or {"threshold": 0.5})["threshold"] for n in names}
