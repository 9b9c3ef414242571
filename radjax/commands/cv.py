"""`radjax cv`: stratified k-fold cross-validation, every fold a normal, resumable training run.

    WORKDIR/plan.json                    which image is held out in which fold, per seed
    WORKDIR/config.json                  the settings the folds train with
    WORKDIR/data/seed_S/fold_K/          TRAIN/ and VAL/ class folders of symbolic links (a view of
                                         a prepared dataset; a manifest of links for multilabel)
    WORKDIR/seed_S/fold_K/               a `radjax train` run (evaluate, predict, explain work on it)
    WORKDIR/seed_S/fold_K/held_out.json  its final-epoch predictions on the held-out fold
    WORKDIR/cv.json, cv_roc.png, held_out.csv   the summary

The images are every labelled image of the data directory: TRAIN/ and VAL/ pooled (TEST/ stays
untouched, for a final test), or one folder per class; or the folds of a `radjax split --folds`
manifest. Images that are exact duplicates (same bytes), near duplicates (perceptual hash within
`duplicates.NEAR_DUPLICATE_MAX_DISTANCE` bits) or of one patient (DICOM PatientID, or a manifest's
patient_id column) form one group, and a group is never split over folds (scikit-learn's
StratifiedGroupKFold), so no fold is validated on an image its model was trained on.

Each seed S repeats the whole cross-validation with its own fold assignment and training seed.
The held-out predictions come from each fold's final epoch, never from its best checkpoint: that
one was chosen on the held-out images themselves and would flatter them. The headline is the
out-of-fold pooled ROC AUC (every image scored once, by the model that did not train on it) with
a stratified bootstrap interval, and its mean and spread over seeds. Three or more classes: the
macro one-vs-rest figures (`metrics.multiclass_metrics`), with each class' AUC interval too.
Multilabel CSVs: folds stratified by each image's rarest positive label, each fold a manifest of
links, the figures per label over its known images (`metrics.multilabel_metrics`) and their
macro means.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import pathlib
import shutil
import sys

import numpy as np

from radjax.data import datasets, duplicates, images, listing, prepared
from radjax.metrics import classification as metrics
from radjax.training import checkpoints, config as config_lib, workdir as workdir_lib
from radjax.errors import UserError

PLAN = "plan.json"
SUMMARY = "cv.json"
ROC_FIGURE = "cv_roc.png"
PREDICTIONS_CSV = "held_out.csv"
HELD_OUT = "held_out.json"
SETTINGS = "config.json"
FOLD_MANIFEST = "manifest.csv"  # a multilabel fold's data: its images/ and this manifest
FOLD_IMAGES = "images"
MIN_FOLDS = 2
POOLED_SPLITS = ("train", "val")  # TEST/ is never pooled: it is the final, untouched test


def fold_name(seed: int, fold: int) -> str:
  return f"seed_{seed}/fold_{fold}"


# ----------------------------------------------------------------------------------------------
# The images, their groups and the folds
# ----------------------------------------------------------------------------------------------

def labelled_images(data_dir, dicom_voi: str = "auto"):
  """(class names, [(path relative to data_dir, label)], note) of every labelled image: TRAIN/
  and VAL/ pooled, or the class folders of an unsplit folder. Unreadable files are skipped by the
  listing with a warning naming them."""
  root = pathlib.Path(data_dir)
  if prepared.is_prepared(root):
    return _prepared_images(root)
  if root.suffix.lower() == ".npz":
    raise UserError(f"{root}: cross-validation reads class folders or a CSV manifest (each fold "
                    "links the image files), not pre-decoded arrays")
  if root.suffix.lower() == ".csv":  # a manifest: its train and val rows, or every row
    has_split = "split" in listing.read_manifest(root)[0]
    folders = listing.list_manifest(root, splits=POOLED_SPLITS if has_split else ("train",),
                                    dicom_voi=dicom_voi, pooled=True)
    examples = [e for split in folders.splits.values() for e in split]
    found = [(pathlib.Path(e.path).relative_to(root.parent).as_posix(),
              list(e.label) if folders.multilabel else e.label) for e in examples]
    rows = "train and val rows" if has_split else "rows"
    return folders.class_names, sorted(found), f"the {rows} of {root.name}"
  present = listing.find_splits(root)  # raises for a missing directory
  if present:
    folders = listing.list_folders(root, splits=POOLED_SPLITS, dicom_voi=dicom_voi)
    examples = [e for split in POOLED_SPLITS for e in folders.splits[split]]
    note = ("TRAIN/ and VAL/ pooled" + (f"; {present['test'].name}/ left out (the final test)"
                                        if "test" in present else ""))
    class_names = folders.class_names
    found = [(pathlib.Path(e.path).relative_to(root).as_posix(), e.label) for e in examples]
  else:
    dirs = listing.class_dirs(root)
    class_names = [d.name for d in dirs]
    if len(class_names) < 2:
      raise UserError(f"{root}: found neither TRAIN/ and VAL/ nor two class folders "
                      f"({class_names}); cross-validation needs labelled images")
    found = []
    for label, d in enumerate(dirs):
      files, others = images.list_image_files(d)
      checked = listing.checked_examples([(p, label, "") for p in files], True, dicom_voi)
      others += [c for c in checked if not isinstance(c, listing.Example)]
      for path, reason in others:
        print(f"radjax cv: skipped {path}: {reason}", file=sys.stderr)
      found += [(pathlib.Path(c.path).relative_to(root).as_posix(), label) for c in checked
                if isinstance(c, listing.Example)]
    note = "the class folders"
  return class_names, sorted(found), note


def _prepared_images(root: pathlib.Path):
  """`labelled_images` of a prepared dataset: its train and val examples, by source path."""
  index = prepared.read_index(root)
  if index["format"] != prepared.FORMAT:
    raise UserError(f"{root}: a view of the prepared dataset {index['prepared']} (a fold's "
                    "data?); cross-validate the dataset itself")
  pooled = [s for s in POOLED_SPLITS if s in index["splits"]]

  def label_of(label):  # a multilabel dataset's labels are 1/0/-1 vectors, as a CSV's
    return [int(v) for v in label] if index["multilabel"] else int(label)

  found = [(path, label_of(label)) for s in pooled
           for path, label in zip(index["splits"][s]["paths"], index["splits"][s]["labels"])]
  note = (f"the {' and '.join(pooled)} splits of the prepared dataset {root.name}"
          + ("; its test split left out (the final test)" if "test" in index["splits"] else ""))
  return index["class_names"], sorted(found), note


def check_classes(class_names, where) -> None:
  if len(class_names) < 2:
    raise UserError(f"{where}: found {len(class_names)} class(es) ({', '.join(class_names)}); "
                    "cross-validation needs at least two")


def manifest_images(manifest):
  """(class names, [(path relative to the manifest's folder, label)], {path: fold}) from a
  `radjax split --folds` manifest: its rows with a fold (the TRAIN images)."""
  from radjax.commands import split as split_lib

  manifest = pathlib.Path(manifest)
  if not manifest.is_file():
    raise UserError(f"--manifest {manifest}: no such file")
  columns, all_rows = listing.read_manifest(manifest)
  missing = [c for c in split_lib.MANIFEST_COLUMNS if c not in columns]
  if missing:
    raise UserError(f"{manifest}: not a `radjax split` manifest (no column {missing[0]!r})")
  rows = [r for _, r in all_rows if r["fold"]]
  if not rows:
    raise UserError(f"{manifest}: no row has a fold; write one with `radjax split --folds K`")
  listing.refuse_near_duplicate_labels([r["class"] for r in rows], manifest)
  class_names = sorted({r["class"] for r in rows})
  check_classes(class_names, manifest)
  found, fold_of = [], {}
  for r in rows:
    relative = listing.manifest_path(r["path"])
    path = manifest.parent / relative
    if not path.is_file():
      raise UserError(f"{manifest}: row {r['path']}: no such file {path}")
    if relative in fold_of:
      raise UserError(f"{manifest}: row {r['path']}: listed twice")
    try:
      fold_of[relative] = int(r["fold"])
    except ValueError:
      raise UserError(f"{manifest}: row {r['path']}: fold {r['fold']!r} is not a number") from None
    found.append((relative, class_names.index(r["class"])))
  return class_names, sorted(found), fold_of


def _identity(path: pathlib.Path, dicom_voi: str) -> tuple[str, int, str]:
  """(SHA-256 of the bytes, perceptual hash, DICOM PatientID or "") of one image."""
  sha = hashlib.sha256(path.read_bytes()).hexdigest()
  phash = duplicates.perceptual_hash(images.read_image(path, dicom_voi))
  from radjax.data import dicom

  return sha, phash, dicom.patient_id(path)


def csv_patients(csv_path) -> dict[str, str]:
  """{path: patient_id} of a CSV manifest's non-empty patient_id cells ({} without the column)."""
  from radjax.commands.split import GROUP_COLUMN

  return {listing.manifest_path(r["path"]): r[GROUP_COLUMN]
          for _, r in listing.read_manifest(csv_path)[1] if r.get(GROUP_COLUMN) and r.get("path")}


def prepared_identity(root, paths: list[str]) -> list[tuple[str, int, str]]:
  """`_identity` of each (source) path of a prepared dataset, from its stored pixels and patient
  ids: the source files need not exist any more."""
  where = prepared.locations(root)
  index = prepared.read_index(root)
  hashes = prepared.identities(root, sorted({where[p][0] for p in paths}))
  return [(*hashes[where[p]], index["splits"][where[p][0]]["patient_ids"][where[p][1]])
          for p in paths]


def groups_of(root, paths: list[str], dicom_voi: str = "auto",
              patients: dict[str, str] | None = None,
              identity: list[tuple[str, int, str]] | None = None
              ) -> tuple[list[int], list[list[str]]]:
  """Group index of every path: exact duplicates, near duplicates and one patient's images (DICOM
  PatientID, or `patients`: a manifest's patient_id column) are joined (transitively). Also
  returns the groups of more than one image, for the report. `identity`: each path's (SHA-256,
  perceptual hash, patient), when known (a prepared dataset's), else read from the files."""
  from tqdm import tqdm

  if identity is None:
    identity = [_identity(pathlib.Path(root) / p, dicom_voi)
                for p in tqdm(paths, desc="radjax cv: grouping duplicates", unit="image",
                              file=sys.stderr, leave=False, disable=None)]  # None: on a terminal
  parent = list(range(len(paths)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  def join(i, j):
    parent[find(i)] = find(j)

  first = {}
  for i, (sha, _, patient) in enumerate(identity):
    patient = (patients or {}).get(paths[i]) or patient
    for key in (("sha", sha), ("patient", patient)) if patient else (("sha", sha),):
      if key in first:
        join(i, first[key])
      first.setdefault(key, i)
  for i, j, _ in duplicates.hamming_pairs([h for _, h, _ in identity],
                                     duplicates.NEAR_DUPLICATE_MAX_DISTANCE):
    join(i, j)
  roots = [find(i) for i in range(len(paths))]
  index = {r: k for k, r in enumerate(dict.fromkeys(roots))}
  members = collections.defaultdict(list)
  for p, r in zip(paths, roots):
    members[index[r]].append(p)
  return [index[r] for r in roots], [m for m in members.values() if len(m) > 1]


def stratification_labels(labels: list, num_labels: int) -> list[int]:
  """The class of each image; for multilabel data (label vectors) the image's rarest positive
  label, or `num_labels` when it has none: folds then spread every label's rarest cases."""
  if not labels or not isinstance(labels[0], list):
    return list(labels)
  vectors = np.array(labels)
  positives = (vectors == 1).sum(0)
  order = np.argsort(positives, kind="stable")  # rarest first
  return [next((int(j) for j in order if v[j] == 1), num_labels) for v in vectors]


def assign_folds(labels, groups, folds: int, seed: int) -> list[int]:
  """Fold 1..folds of every image: stratified by label, groups kept whole, shuffled by `seed`."""
  from sklearn.model_selection import StratifiedGroupKFold

  distinct = collections.Counter(groups)
  if len(distinct) < folds:
    raise UserError(f"--folds {folds}: the images form only {len(distinct)} group(s) of "
                    "duplicates or one patient (the largest holds "
                    f"{max(distinct.values())} images); lower --folds, or check the patient ids")
  fold_of = np.zeros(len(labels), int)
  splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
  for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
    fold_of[held_out] = k + 1
  return fold_of.tolist()


def _check_folds(fold_of: list[int], labels: list, folds: int, class_names, where: str):
  """Every fold must hold out, and train on, every class: otherwise it has no AUC. Multilabel:
  every fold must train on both values of every label (its held-out figures use what it has)."""
  if labels and isinstance(labels[0], list):
    for k in range(1, folds + 1):
      rest = np.array([lab for f, lab in zip(fold_of, labels) if f != k])
      for j, name in enumerate(class_names):
        if not {0, 1} <= set(rest[:, j].tolist()):
          raise UserError(f"{where}: fold {k} trains on no {'positive' if 1 not in rest[:, j] else 'negative'} "
                          f"{name} image; every fold needs both values of every label (lower "
                          "--folds, or add images)")
    return
  for k in range(1, folds + 1):
    held = [lab for f, lab in zip(fold_of, labels) if f == k]
    rest = [lab for f, lab in zip(fold_of, labels) if f != k]
    for name, part in (("holds out", held), ("trains on", rest)):
      missing = [class_names[c] for c in range(len(class_names)) if c not in part]
      if missing:
        raise UserError(f"{where}: fold {k} {name} no {', '.join(missing)} image; every fold "
                        "needs every class (lower --folds, or add images)")


def make_plan(data_dir, folds: int, seeds: list[int], dicom_voi: str = "auto",
              manifest=None) -> dict:
  """Which image is held out in which fold, for every seed; and the duplicate groups."""
  if manifest is not None:
    class_names, found, manifest_folds = manifest_images(manifest)
    root, note = pathlib.Path(manifest).parent.resolve(), f"the folds of {manifest}"
    used = sorted(set(manifest_folds.values()))
    if folds and folds != len(used):
      raise UserError(f"--folds {folds}: {manifest} has {len(used)} folds ({used})")
    folds = len(used)
    renumber = {f: k + 1 for k, f in enumerate(used)}
  else:
    if folds < MIN_FOLDS:
      raise UserError(f"--folds {folds}: cross-validation needs at least {MIN_FOLDS} folds")
    source = pathlib.Path(data_dir).resolve()
    class_names, found, note = labelled_images(source, dicom_voi)
    root = source.parent if source.suffix.lower() == ".csv" else source  # paths are relative to it
  from_prepared = manifest is None and prepared.is_prepared(root)  # paths: its source paths
  paths, labels = [p for p, _ in found], [lab for _, lab in found]
  strata = stratification_labels(labels, len(class_names))
  counts = collections.Counter(strata)
  for c, name in enumerate(class_names):
    if not isinstance(labels[0], list) and counts[c] < folds:
      raise UserError(f"{root}: class {name} has {counts[c]} image(s), fewer than --folds {folds}")
  csv_file = manifest if manifest is not None else (
      source if source.suffix.lower() == ".csv" else None)
  groups, joined = groups_of(root, paths, dicom_voi, csv_patients(csv_file) if csv_file else None,
                             prepared_identity(root, paths) if from_prepared else None)
  assignment = {}
  for seed in seeds:
    if manifest is not None:  # the manifest's folds for every seed; seeds vary the training
      fold_of = [renumber[manifest_folds[p]] for p in paths]
      position = {p: i for i, p in enumerate(paths)}
      for g in [g for g in joined if len({fold_of[position[p]] for p in g}) > 1]:
        print(f"radjax cv: warning: {manifest}: duplicates or one patient's images in different "
              f"folds: {', '.join(g)}", file=sys.stderr)
    else:
      fold_of = assign_folds(strata, groups, folds, seed)
    _check_folds(fold_of, labels, folds, class_names, str(manifest or root))
    assignment[str(seed)] = fold_of
  return {"data_dir": str(root if manifest is not None else source), "root": str(root),
          "source": note, "manifest": str(manifest or ""), "prepared": from_prepared,
          "class_names": class_names, "folds": folds, "paths": paths, "labels": labels,
          "groups": joined, "assignment": assignment}


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
  from radjax.commands.evaluate import per_class_intervals

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


def _cell(x: float) -> str:
  return "  n/a" if x is None or np.isnan(x) else f"{x:.3f}"


def format_summary(summary: dict) -> str:
  """The per-fold table, then the pooled figures per seed and over seeds."""
  lines = [f"Cross-validation: {summary['folds']} folds x {len(summary['seeds'])} seed(s), "
           f"{summary['images']} images ({summary['source']}); "
           f"{len(summary['groups_kept_whole'])} duplicate/patient group(s) kept whole",
           f"{'seed':>4} {'fold':>4} {'n':>4}  " + "  ".join(f"{k:>11}" for k in FOLD_METRICS)]
  for seed, s in summary["per_seed"].items():
    for fold, m in s["folds"].items():
      lines.append(f"{seed:>4} {fold:>4} {m['count']:>4}  "
                   + "  ".join(f"{_cell(m[k]):>11}" for k in FOLD_METRICS))
    p, ci = s["pooled"], s["intervals"]
    lines.append(f"{seed:>4} {'all':>4} {p['count']:>4}  "
                 + "  ".join(f"{_cell(p[k]):>11}" for k in FOLD_METRICS) + "   (pooled)")
    lines.append(f"{'':>14}  " + "  ".join(f"[{_cell(ci[k][0])},{_cell(ci[k][1])}]"
                                           .rjust(11) for k in FOLD_METRICS)
                 + "   (95% bootstrap)")
    exact = s["exact_intervals"]
    lines.append(f"{'':>14}  {'':>11}  " + "  ".join(
        f"[{_cell(exact[k][0])},{_cell(exact[k][1])}]".rjust(11) if k in exact else " " * 11
        for k in FOLD_METRICS[1:]) + "   (95% exact binomial)")
    if "per_class" in s:
      from radjax.metrics.summary import format_per_class

      per = ("per label, over its known images" if "known" in s["per_class"][0]
             else "per class one vs rest")
      lines.append(f"  seed {seed}, pooled, {per} (in brackets: 95% bootstrap intervals):\n"
                   + format_per_class(s, summary["class_names"]))
  over = summary["pooled_over_seeds"]["auc"]
  spread = "" if np.isnan(over["sd"]) else f" +- {over['sd']:.3f} (sd over {over['n']} seeds)"
  first = next(iter(summary["per_seed"].values()))
  macro = ("" if "per_class" not in first else "macro per-label " if "known" in
           first["per_class"][0] else "macro one-vs-rest ")
  lines.append(f"Out-of-fold pooled {macro}ROC AUC: {_cell(over['mean'])}{spread}; held-out "
               "predictions from each fold's final epoch")
  return "\n".join(lines)


def plot_cv_roc(summary: dict, results: dict[int, dict[int, dict]], path) -> None:
  """The pooled out-of-fold ROC curve of every seed."""
  from sklearn import metrics as skm

  from radjax.metrics import figures as plots

  names = summary["class_names"]
  first = next(iter(results.values()))
  if np.ndim(pooled_predictions(first)[1]) == 2:  # multilabel: a curve per label and seed
    curves = []
    for seed, by_fold in results.items():
      logits, labels = pooled_predictions(by_fold)
      for k, name in enumerate(names):
        known = labels[:, k] >= 0
        if len(np.unique(labels[known, k])) == 2:
          auc = summary["per_seed"][str(seed)]["per_class"][k]["auc"]
          curves.append((labels[known, k] == 1, logits[known, k],
                         f"seed {seed}: {name} (AUC {auc:.3f})"))
    plots._plot_roc_curves(curves, path, f"{summary['folds']}-fold CV, out-of-fold pooled")
    return
  if np.ndim(pooled_predictions(first)[0]) == 2:  # multiclass: one-vs-rest curves, every seed
    curves = []
    for seed, by_fold in results.items():
      logits, labels = pooled_predictions(by_fold)
      for c, name in enumerate(names):
        if 0 < np.sum(labels == c) < len(labels):
          log_odds = logits[:, c] - np.logaddexp.reduce(np.delete(logits, c, axis=1), axis=1)
          auc = summary["per_seed"][str(seed)]["per_class"][c]["auc"]
          curves.append((labels == c, log_odds, f"seed {seed}: {name} vs rest (AUC {auc:.3f})"))
    plots._plot_roc_curves(curves, path, f"{summary['folds']}-fold CV, out-of-fold pooled")
    return
  fig = plots._figure(5, 5)
  ax = fig.add_subplot()
  for seed, by_fold in results.items():
    logits, labels = pooled_predictions(by_fold)
    fpr, tpr, _ = skm.roc_curve(labels, logits)
    s = summary["per_seed"][str(seed)]
    lo, hi = s["intervals"]["auc"]
    ax.plot(fpr, tpr, lw=2, label=f"seed {seed}: AUC {s['pooled']['auc']:.3f} "
                                  f"[{lo:.3f}, {hi:.3f}]")
  ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="chance")
  ax.set(xlabel=f"False positive rate (1 - specificity, {names[0]})",
         ylabel=f"True positive rate (sensitivity, {names[1]})",
         title=f"{summary['folds']}-fold CV, out-of-fold pooled", xlim=(0, 1), ylim=(0, 1.02))
  ax.legend(loc="lower right", fontsize="small")
  fig.savefig(path, dpi=120)


def _write_predictions(plan: dict, results, path) -> None:
  """held_out.csv: binary, the second class' probability and the logit; multiclass, every class'
  probability and the most probable class."""
  names = plan["class_names"]
  logits, labels = pooled_predictions(next(iter(results.values())))
  multilabel, multiclass = np.ndim(labels) == 2, np.ndim(logits) == 2
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    if multilabel:  # each label's truth (blank: unknown), probability, and the decision
      writer.writerow(["seed", "fold", "path", *names, *(f"p_{n}" for n in names), "predicted"])
    else:
      writer.writerow(["seed", "fold", "path", "class"] + (
          [f"p_{n}" for n in names] + ["predicted"] if multiclass
          else [f"p_{names[1]}", "logit"]))
    for seed, by_fold in results.items():
      for fold, r in sorted(by_fold.items()):
        for p, lab, z in zip(r["paths"], r["labels"], r["logits"]):
          if multilabel:
            probability = metrics.sigmoid(np.asarray(z))
            above = [n for n, q in zip(names, probability) if q > 0.5]
            writer.writerow([seed, fold, p, *("" if v < 0 else v for v in lab),
                             *(f"{q:.6f}" for q in probability), "+".join(above) or "none"])
            continue
          if multiclass:
            probability = metrics.softmax(np.asarray(z)[None])[0]
            scores = [f"{q:.6f}" for q in probability] + [names[int(np.argmax(probability))]]
          else:
            scores = [f"{metrics.sigmoid(z):.6f}", f"{z:.6g}"]
          writer.writerow([seed, fold, p, names[lab], *scores])


def cross_validate(config, workdir, folds: int, seeds: int = 1, manifest=None) -> dict:
  """Runs (or continues) the cross-validation; writes and returns the summary (see module doc).

  `seeds`: how many repetitions, with seeds config.seed, config.seed + 1, ...
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
    plot_cv_roc(summary, results, workdir / ROC_FIGURE)
    _write_predictions(plan, results, workdir / PREDICTIONS_CSV)
  return summary
