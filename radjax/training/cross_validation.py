"""Cross-validation runs (`radjax cv`): every fold a normal, resumable training run, and the
summary of their held-out predictions.

    WORKDIR/plan.json                    which image is held out in which fold, per seed
                                         (`radjax.data.folds.make_plan`)
    WORKDIR/config.json                  the settings the folds train with
    WORKDIR/data/seed_S/fold_K/          TRAIN/ and VAL/ class folders of symbolic links (a view of
                                         a prepared dataset; a manifest of links for multilabel)
    WORKDIR/seed_S/fold_K/               a `radjax train` run (evaluate, predict, explain work on it)
    WORKDIR/seed_S/fold_K/held_out.json  its final-epoch predictions on the held-out fold
    WORKDIR/cv.json                      the summary

Each seed S repeats the whole cross-validation with its own fold assignment and training seed.
The held-out predictions come from each fold's final epoch, never from its best checkpoint: that
one was chosen on the held-out images themselves and would flatter them. The headline is the
out-of-fold pooled ROC AUC (every image scored once, by the model that did not train on it) with
a stratified bootstrap interval, and its mean and spread over seeds. Three or more classes: the
macro one-vs-rest figures (`metrics.multiclass_metrics`), with each class' AUC interval too.
Multilabel: each fold a manifest of links, the figures per label over its known images
(`metrics.multilabel_metrics`) and their macro means.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil

import numpy as np

from radjax.data import datasets, listing, prepared
from radjax.data.folds import fold_name, make_plan
from radjax.metrics import classification as metrics
from radjax.training import checkpoints, config as config_lib, workdir as workdir_lib
from radjax.errors import UserError

PLAN = "plan.json"
SUMMARY = "cv.json"
HELD_OUT = "held_out.json"
SETTINGS = "config.json"
FOLD_MANIFEST = "manifest.csv"  # a multilabel fold's data: its images/ and this manifest
FOLD_IMAGES = "images"


def _check_plan(stored: dict, plan: dict, workdir) -> None:
  """A rerun must continue the same cross-validation: same images, labels and folds."""
  for key in ("data_dir", "manifest", "class_names", "folds", "paths", "labels"):
    if stored[key] != plan[key]:
      what = "images" if key == "paths" else key
      raise UserError(f"{workdir}: holds a cross-validation with different {what} (its "
                      f"{PLAN} was made for another dataset or setting); use a new --workdir")
  for seed, fold_of in plan["assignment"].items():
    if seed in stored["assignment"] and stored["assignment"][seed] != fold_of:
      raise UserError(f"{workdir}: seed {seed}'s folds differ from the stored {PLAN}; "
                      "use a new --workdir")


# ----------------------------------------------------------------------------------------------
# The fold runs
# ----------------------------------------------------------------------------------------------

def _fold_data(plan: dict, seed: str, fold: int, target: pathlib.Path) -> pathlib.Path:
  """TRAIN/ and VAL/ class folders of symbolic links to the fold's images (kept at their paths
  below the class folder, so equal names never collide); for a prepared dataset, a view of it
  (`prepared.write_view`: nothing is copied or decoded again). Built once, atomically."""
  if target.is_dir():
    return target / FOLD_MANIFEST if (target / FOLD_MANIFEST).is_file() else target
  building = target.with_name(target.name + ".partial")
  shutil.rmtree(building, ignore_errors=True)
  root = pathlib.Path(plan["root"])
  if plan.get("prepared"):  # its labels travel with the dataset, multilabel ones too
    where = prepared.locations(root)
    held = plan["assignment"][seed]
    prepared.write_view(root, building, {
        "train": [where[p] for p, f in zip(plan["paths"], held) if f != fold],
        "val": [where[p] for p, f in zip(plan["paths"], held) if f == fold]})
    building.rename(target)
    return target
  if plan["labels"] and isinstance(plan["labels"][0], list):  # multilabel: a manifest per fold
    return _multilabel_fold_data(plan, seed, fold, target, building)
  for path, label, f in zip(plan["paths"], plan["labels"], plan["assignment"][seed]):
    split = "VAL" if f == fold else "TRAIN"
    link = building / split / plan["class_names"][label] / path
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(root / path, link)
  building.rename(target)
  return target


def _multilabel_fold_data(plan: dict, seed: str, fold: int, target: pathlib.Path,
                          building: pathlib.Path) -> pathlib.Path:
  """A fold of multilabel data: images/ (symbolic links at the images' own paths) and a manifest
  of them (split train or val, a 1/0/blank column per label). Returns the manifest."""
  root = pathlib.Path(plan["root"])
  rows = []
  for path, label, f in zip(plan["paths"], plan["labels"], plan["assignment"][seed]):
    link = building / FOLD_IMAGES / path
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(root / path, link)
    rows.append([f"{FOLD_IMAGES}/{path}", "val" if f == fold else "train",
                 *("" if v < 0 else str(v) for v in label)])
  with open(building / FOLD_MANIFEST, "w", newline="") as f:
    csv.writer(f).writerows([["path", "split", *plan["class_names"]], *rows])
  building.rename(target)
  return target / FOLD_MANIFEST


def _source_path(fold_data: pathlib.Path, path: str) -> str:
  """The data-dir-relative path of a fold's linked image (below VAL/<class>/)."""
  return pathlib.Path(*pathlib.Path(path).relative_to(fold_data).parts[2:]).as_posix()


def held_out_predictions(fold_dir, epoch: int) -> dict:
  """The logits of the fold's checkpoint of `epoch` on its held-out (VAL) images."""
  from radjax.training import run as run_lib

  trained = run_lib.load(fold_dir, str(epoch))
  fold_data = pathlib.Path(trained.meta["data_dir"])
  pipeline = datasets.open_pipeline(fold_data, trained.config, splits=("val",))
  logits, labels = trained.steps.logits_of(
      trained.variables, pipeline.eval_batches("val", trained.config.eval_batch_size))
  view = prepared.is_prepared(fold_data)  # its examples' paths are the plan's, the source paths

  def source(path):
    if view:
      return path
    if fold_data.suffix == ".csv":  # multilabel: below the fold's images/
      return pathlib.Path(path).relative_to(fold_data.parent / FOLD_IMAGES).as_posix()
    return _source_path(fold_data, path)

  return {"epoch": epoch, "paths": [source(e.path) for e in pipeline.examples["val"]],
          "labels": np.asarray(labels, int).tolist(), "logits": np.asarray(logits, float).tolist()}


def _fold_data_dir(workdir: pathlib.Path, seed: int, fold: int) -> pathlib.Path:
  return workdir / "data" / fold_name(seed, fold)


def _fold_config(config, fold_data: pathlib.Path, seed: int):
  fold_config = config.copy_and_resolve_references()
  fold_config.data_dir = str(fold_data)
  fold_config.seed = seed
  return fold_config


def _refuse(where, forbidden: dict) -> None:
  if forbidden:
    raise UserError(f"{where}: cannot continue with changed {config_lib.describe_changes(forbidden)} "
                    "(the earlier value first): they change what the weights mean or which data "
                    "they see, and folds trained otherwise would be pooled into one figure. "
                    "Rerun with the earlier values, or cross-validate in a new --workdir.")


def _check_settings(workdir: pathlib.Path, config) -> dict:
  """A rerun follows `radjax train`'s resume rule for the cross-validation as a whole: settings
  that change what the weights mean are refused before any fold runs; other changes are printed
  and returned (the summary records them: finished folds keep results trained the earlier way,
  unfinished ones continue with the new settings). Stores the settings for the next rerun."""
  stored_file, changes = workdir / SETTINGS, {}
  if stored_file.is_file():
    forbidden, changes = config_lib.resume_changes(json.loads(stored_file.read_text()), config)
    _refuse(workdir, forbidden)
    changes.pop("seed", None)  # --seeds repeats from config.seed: the plan holds each seed
    if changes:
      print(f"radjax cv: settings changed since the folds started: "
            f"{config_lib.describe_changes(changes)}. Finished folds keep their results (trained "
            "with the earlier values); unfinished folds continue with these. Recorded in "
            f"{SUMMARY}.")
  stored_file.write_text(json.dumps(config.to_dict(), indent=1))
  return changes


def _check_fold_settings(fold_dir: pathlib.Path, fold_config) -> None:
  """The same rule against the settings a finished fold's checkpoint was trained with (workdirs
  from before config.json, or edited by hand)."""
  try:
    stored = checkpoints.meta_of(fold_dir, "latest")["config"]
  except UserError:  # no readable checkpoint: training the fold again says why
    return
  forbidden, _ = config_lib.resume_changes(stored, fold_config)
  _refuse(fold_dir, forbidden)


def run_fold(config, workdir: pathlib.Path, plan: dict, seed: int, fold: int) -> dict:
  """Trains (or resumes, or skips) one fold and returns its held-out predictions."""
  from radjax.training import loop as train

  fold_dir = workdir / fold_name(seed, fold)
  done = fold_dir / HELD_OUT
  if done.is_file():
    result = json.loads(done.read_text())
    _check_fold_settings(fold_dir, _fold_config(config, _fold_data_dir(workdir, seed, fold), seed))
    if result["epoch"] == config.num_epochs:
      print(f"radjax cv: {fold_name(seed, fold)}: done (epoch {result['epoch']})")
      return result
  fold_data = _fold_data(plan, str(seed), fold, _fold_data_dir(workdir, seed, fold))
  held = plan["assignment"][str(seed)].count(fold)
  print(f"radjax cv: {fold_name(seed, fold)}: training on {len(plan['paths']) - held} images, "
        f"{held} held out -> {fold_dir}", flush=True)
  train.train_and_evaluate(_fold_config(config, fold_data, seed), fold_dir)
  result = held_out_predictions(fold_dir, config.num_epochs)
  done.write_text(json.dumps(result, indent=1))
  return result


# ----------------------------------------------------------------------------------------------
# The summary
# ----------------------------------------------------------------------------------------------

FOLD_METRICS = ("auc", "accuracy", "sensitivity", "specificity")


def _mean_sd(values) -> dict:
  values = [v for v in values if not np.isnan(v)]
  if not values:
    return {"mean": float("nan"), "sd": float("nan"), "n": 0}
  return {"mean": float(np.mean(values)),
          "sd": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
          "n": len(values)}


def summarize(plan: dict, results: dict[int, dict[int, dict]], bootstrap_seed: int = 0) -> dict:
  """Per-fold metrics, the pooled out-of-fold metrics of every seed with bootstrap intervals,
  and their mean and spread over seeds."""
  from radjax.metrics.classification import per_class_intervals

  per_seed = {}
  for seed, by_fold in results.items():
    folds = {}
    for fold, r in sorted(by_fold.items()):
      m = metrics.classification_metrics(np.asarray(r["logits"]), r["labels"])
      folds[str(fold)] = {k: m[k] for k in FOLD_METRICS + ("count",)}
    logits, labels = pooled_predictions(by_fold)
    pooled = metrics.classification_metrics(logits, labels)
    multilabel = np.ndim(labels) == 2  # else multiclass with (n, N) logits: macro figures
    intervals = (metrics.multilabel_bootstrap_intervals if multilabel
                 else metrics.multiclass_bootstrap_intervals if np.ndim(logits) == 2
                 else metrics.bootstrap_intervals)
    per_seed[str(seed)] = {
        "folds": folds,
        "pooled": {k: pooled[k] for k in FOLD_METRICS + ("loss", "count", "confusion_matrix")
                   if k in pooled},
        "intervals": intervals(logits, labels, seed=bootstrap_seed),
        # The bootstrap collapses on a perfect result; these do not (accuracy, sens., spec.).
        "exact_intervals": {} if multilabel else metrics.exact_intervals(pooled)}
    if np.ndim(logits) == 2:
      per_seed[str(seed)]["per_class"] = [
          {**m, "intervals": per_class_intervals(logits, labels, k, multilabel, bootstrap_seed)}
          for k, m in enumerate(pooled["per_class"])]
  fold_values = [f for s in per_seed.values() for f in s["folds"].values()]
  return {
      "data_dir": plan["data_dir"], "source": plan["source"], "class_names": plan["class_names"],
      "folds": plan["folds"], "seeds": [int(s) for s in per_seed], "images": len(plan["paths"]),
      "groups_kept_whole": plan["groups"],
      "predictions_from": "each fold's final epoch (not its best checkpoint, which was chosen "
                          "on the held-out images)",
      "per_seed": per_seed,
      "pooled_over_seeds": {k: _mean_sd([s["pooled"][k] for s in per_seed.values()])
                            for k in FOLD_METRICS},
      "per_fold_over_all": {k: _mean_sd([f[k] for f in fold_values]) for k in FOLD_METRICS},
  }


def pooled_predictions(by_fold: dict[int, dict]) -> tuple[np.ndarray, np.ndarray]:
  """Every fold's held-out (logits, labels), pooled: (n,) or (n, N) logits."""
  return (np.concatenate([np.asarray(r["logits"], np.float64) for r in by_fold.values()]),
          np.concatenate([np.asarray(r["labels"], int) for r in by_fold.values()]))


def cross_validate(config, workdir, folds: int, seeds: int = 1, manifest=None,
                   outputs=None) -> dict:
  """Runs (or continues) the cross-validation; writes and returns the summary (see module doc).

  `seeds`: how many repetitions, with seeds config.seed, config.seed + 1, ...
  `outputs(summary, results, plan, workdir)`: writes further outputs (`radjax cv`'s figure and
  CSV) after the summary, while the workdir is still locked.
  """
  if seeds < 1:
    raise UserError(f"--seeds {seeds}: expected at least 1")
  seed_list = [config.seed + i for i in range(seeds)]
  workdir = workdir_lib.prepare(workdir)
  with workdir_lib.lock(workdir):
    data_dir = None if manifest else listing.resolve_data_dir(config.data_dir)
    plan = make_plan(data_dir, folds, seed_list, config.dicom_voi, manifest)
    plan_file = workdir / PLAN
    if plan_file.is_file():
      stored = json.loads(plan_file.read_text())
      _check_plan(stored, plan, workdir)
      plan["assignment"] = {**stored["assignment"], **plan["assignment"]}
    plan_file.write_text(json.dumps(plan, indent=1))
    changes = _check_settings(workdir, config)
    results = {seed: {fold: run_fold(config, workdir, plan, seed, fold)
                      for fold in range(1, plan["folds"] + 1)}
               for seed in seed_list}
    summary = summarize(plan, results, bootstrap_seed=config.seed)
    summary["settings_changed"] = changes
    (workdir / SUMMARY).write_text(json.dumps(metrics.json_safe(summary), indent=2))
    if outputs is not None:
      outputs(summary, results, plan, workdir)
  return summary
