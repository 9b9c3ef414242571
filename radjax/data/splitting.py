"""Splitting one folder per class into TRAIN/VAL(/TEST) class folders, stratified and seeded
(`radjax split`).

    SRC/<class>/*          ->  DST/TRAIN/<class>/*, DST/VAL/<class>/*, DST/TEST/<class>/*
                               DST/manifest.csv  (path, class, split, fold)

Files are copied, never moved: SRC is left exactly as it was. The validation (and test) images are
spread over the classes in proportion to their sizes, and chosen by numpy's `default_rng(seed)`,
so the same seed gives the same split on any machine. With `folds`, the training images are also
given a stratified cross-validation fold, recorded in the manifest.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import pathlib
import shutil

import numpy as np

from radjax.data import images, listing
from radjax.errors import UserError

log = logging.getLogger("radjax")

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "class", "split", "fold")
SPLIT_FOLDERS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
MIN_TRAIN_PER_CLASS = 1  # a class with no training image cannot be learned
MIN_FOLDS = 2
# --group-by: what keeps a patient's images together. "patient_id": the DICOM PatientID;
# "folder": the sub-folder of the class folder (DATA/<class>/<patient>/*). A file without one is a
# group of its own. Written to the manifest's patient_id column.
GROUP_BY = ("patient_id", "folder")
GROUP_COLUMN = "patient_id"


def allocate(class_counts: dict[str, int], total: int) -> dict[str, int]:
  """Splits `total` over the classes in proportion to `class_counts`; the parts sum to `total`.

  Largest-remainder rounding; when `total` is at least the number of classes, every class gets at
  least one (taken from a class holding two or more, the one furthest above its exact share).
  """
  n = sum(class_counts.values())
  if total <= 0 or n == 0:
    return {c: 0 for c in class_counts}
  quota = {c: total * k / n for c, k in class_counts.items()}
  parts = {c: math.floor(q) for c, q in quota.items()}
  by_remainder = sorted(class_counts, key=lambda c: (parts[c] - quota[c], c))
  for c in by_remainder[:total - sum(parts.values())]:
    parts[c] += 1
  if total >= len(class_counts):
    for c in [c for c in parts if parts[c] == 0]:
      donor = max((d for d in parts if parts[d] > 1), key=lambda d: (parts[d] - quota[d], d))
      parts[donor] -= 1
      parts[c] += 1
  return parts


def stratified_folds(files_per_class: dict[str, list[str]], folds: int,
                     rng: np.random.Generator) -> dict[str, int]:
  """Fold 0..folds-1 of every file: each class shuffled, then dealt round-robin.

  The deal continues from class to class, so fold sizes differ by at most one overall and by at
  most one within each class.
  """
  fold_of, dealt = {}, 0
  for cls in sorted(files_per_class):
    files = files_per_class[cls]
    for k, i in enumerate(rng.permutation(len(files))):
      fold_of[files[i]] = (dealt + k) % folds
    dealt += len(files)
  return fold_of


def _group_folds(train: dict[str, list[str]], group_of: dict[str, str], folds: int,
                 seed: int) -> dict[str, int]:
  """Fold 0..folds-1 of every training file, stratified by class, groups kept whole."""
  from sklearn.model_selection import StratifiedGroupKFold

  paths = [p for cls in sorted(train) for p in train[cls]]
  labels = [cls for cls in sorted(train) for _ in train[cls]]
  groups = {group_of[p] for p in paths}
  if len(groups) < folds:
    raise UserError(f"--folds {folds}: the training images form only {len(groups)} group(s); "
                    "lower --folds")
  splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
  fold_of = {}
  for k, (_, held) in enumerate(splitter.split(np.zeros(len(paths)), labels,
                                               [group_of[p] for p in paths])):
    fold_of.update({paths[i]: k for i in held})
  return fold_of


def _check_source(src: pathlib.Path) -> list[pathlib.Path]:
  if not src.is_dir():
    raise UserError(f"{src}: no such directory")
  splits = listing.find_splits(src)
  if splits:
    names = ", ".join(p.name + "/" for p in splits.values())
    raise UserError(f"{src}: already has split folders ({names}); it looks already split. "
                    "`radjax split` takes a folder with one sub-folder per class.")
  classes = listing.class_dirs(src)
  if len(classes) < 2:
    raise UserError(f"{src}: found {len(classes)} class folder(s) "
                    f"{[d.name for d in classes]}; splitting needs at least two")
  return classes


def _check_destination(src: pathlib.Path, dst: pathlib.Path):
  if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
    raise UserError(f"{dst}: already exists and is not empty; choose a new output directory")
  if dst.resolve().is_relative_to(src.resolve()):
    raise UserError(f"{dst}: is inside {src}; it would become a class folder of the source")


def group_key(path: str, class_dir: pathlib.Path, group_by: str) -> str:
  """The patient (or other group) of one file, "" when it has none."""
  if group_by == "folder":
    parts = pathlib.Path(path).relative_to(class_dir).parts
    return parts[0] if len(parts) > 1 else ""
  from radjax.data import dicom

  return dicom.patient_id(path)


def _assign_groups(files, group_of, n_val, n_test, rng) -> dict[str, dict[str, list[str]]]:
  """Whole groups to VAL, then TEST, while they fit those splits' per-class counts; the rest to
  TRAIN. A group may hold several classes (one patient's chest and abdomen films)."""
  members = {}
  for cls in sorted(files):
    for path in files[cls]:
      members.setdefault(group_of[path], []).append((cls, path))
  need = {"val": dict(n_val), "test": dict(n_test)}
  assigned = {split: {cls: [] for cls in files} for split in SPLIT_FOLDERS}
  keys = sorted(members)
  for k in rng.permutation(len(keys)):
    group = members[keys[k]]
    count = collections.Counter(cls for cls, _ in group)
    split = next((s for s in ("val", "test")
                  if any(need[s][c] for c in count) and all(n <= need[s][c]
                                                            for c, n in count.items())), "train")
    for cls, path in group:
      assigned[split][cls].append(path)
      if split != "train":
        need[split][cls] -= 1
  for split, missing in need.items():
    short = {c: n for c, n in missing.items() if n}
    if short:
      log.warning("%s is short of %s image(s): whole groups did not fit its per-class counts",
                  SPLIT_FOLDERS[split], short)
  return {split: {cls: sorted(paths) for cls, paths in per_class.items()}
          for split, per_class in assigned.items()}


def split_dataset(src, dst, val: int, seed: int, folds: int = 0, test: int = 0,
                  group_by: str = "") -> dict:
  """Copies SRC/<class>/* into DST/TRAIN|VAL|TEST/<class>/ and writes DST/manifest.csv.

  `val` and `test` are image totals over all classes; `folds` >= 2 adds a stratified k-fold
  assignment of the training images. With `group_by` ("patient_id" or "folder"), one patient's
  images never land in two splits or two folds. Returns {"counts": {split: {class: n}},
  "manifest": path, "folds": folds, "groups": number of groups or None}.
  """
  src, dst = pathlib.Path(src), pathlib.Path(dst)
  classes = _check_source(src)
  _check_destination(src, dst)
  if val < 1:
    raise UserError(f"--val {val}: need at least one validation image")
  if test < 0:
    raise UserError(f"--test {test}: cannot be negative")
  if folds and folds < MIN_FOLDS:
    raise UserError(f"--folds {folds}: cross-validation needs at least {MIN_FOLDS} folds")
  if group_by and group_by not in GROUP_BY:
    raise UserError(f"--group-by {group_by}: expected one of {', '.join(GROUP_BY)}")
  skipped: list[tuple[str, str]] = []
  files = {}
  for d in classes:
    files[d.name], others = images.list_image_files(d)
    skipped += others
  for path, reason in skipped:
    log.warning("not copied: %s: %s", path, reason)
  counts = {cls: len(paths) for cls, paths in files.items()}
  n_val, n_test = allocate(counts, val), allocate(counts, test)
  for cls, n in counts.items():
    if n_val[cls] + n_test[cls] > n - MIN_TRAIN_PER_CLASS:
      held = f"{n_val[cls]} to VAL" + (f" and {n_test[cls]} to TEST" if test else "")
      raise UserError(f"{src / cls}: has {n} image(s); cannot give {held} and keep at least "
                      f"{MIN_TRAIN_PER_CLASS} for TRAIN (lower --val/--test)")
    if n_val[cls] == 0:
      log.warning("class %s gets no validation image (--val %d < %d classes)", cls, val,
                  len(counts))

  rng = np.random.default_rng(seed)
  group_of = {}
  if group_by:
    for cls in files:
      for path in files[cls]:
        group_of[path] = group_key(path, src / cls, group_by) or f"(own) {path}"
    alone = sum(key.startswith("(own) ") for key in group_of.values())
    if alone:
      log.warning("%d file(s) have no %s: each is a group of its own", alone, group_by)
    assigned = _assign_groups(files, group_of, n_val, n_test, rng)
  else:
    assigned = {split: {} for split in SPLIT_FOLDERS}
    for cls in sorted(files):
      order = rng.permutation(len(files[cls]))
      chosen = {"val": order[:n_val[cls]], "test": order[n_val[cls]:n_val[cls] + n_test[cls]],
                "train": order[n_val[cls] + n_test[cls]:]}
      for split, indices in chosen.items():
        assigned[split][cls] = sorted(files[cls][i] for i in indices)
  if folds:
    too_few = {c: len(f) for c, f in assigned["train"].items() if len(f) < folds}
    if too_few:
      raise UserError(f"--folds {folds}: class(es) {too_few} would have fewer training images "
                      "than folds; lower --folds")
  if folds and group_by:
    fold_of = _group_folds(assigned["train"], group_of, folds, seed)
  else:
    fold_of = stratified_folds(assigned["train"], folds, rng) if folds else {}

  rows = []
  for split, per_class in assigned.items():
    for cls, paths in per_class.items():
      if not paths:
        continue
      folder = dst / SPLIT_FOLDERS[split] / cls
      folder.mkdir(parents=True, exist_ok=True)
      for path in paths:
        # Sub-folders (one per patient) are kept, so equal file names in two of them never collide.
        target = folder / pathlib.Path(path).relative_to(src / cls)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        group = group_of.get(path, "")
        rows.append({"path": target.relative_to(dst).as_posix(), "class": cls, "split": split,
                     "fold": fold_of.get(path, ""),
                     GROUP_COLUMN: "" if group.startswith("(own) ") else group})
  manifest = dst / MANIFEST
  with manifest.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS + (GROUP_COLUMN,))
    writer.writeheader()
    writer.writerows(rows)
  result_counts = {split: {cls: len(paths) for cls, paths in per_class.items()}
                   for split, per_class in assigned.items() if split != "test" or test}
  return {"counts": result_counts, "manifest": str(manifest), "folds": folds,
          "groups": len(set(group_of.values())) if group_by else None}
