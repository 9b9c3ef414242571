"""`radjax split`: one folder per class -> TRAIN/VAL(/TEST) class folders, stratified and seeded.

    SRC/<class>/*          ->  DST/TRAIN/<class>/*, DST/VAL/<class>/*, DST/TEST/<class>/*
                               DST/manifest.csv  (path, class, split, fold)

Files are copied, never moved: SRC is left exactly as it was. The validation (and test) images are
spread over the classes in proportion to their sizes, and chosen by numpy's `default_rng(seed)`,
so the same seed gives the same split on any machine. With `folds`, the training images are also
given a stratified cross-validation fold, recorded in the manifest.
"""

from __future__ import annotations

import csv
import logging
import math
import pathlib
import shutil

import numpy as np

from radjax import data, images
from radjax.errors import UserError

log = logging.getLogger("radjax")

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "class", "split", "fold")
SPLIT_FOLDERS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
MIN_TRAIN_PER_CLASS = 1  # a class with no training image cannot be learned
MIN_FOLDS = 2


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


def _check_source(src: pathlib.Path) -> list[pathlib.Path]:
  if not src.is_dir():
    raise UserError(f"{src}: no such directory")
  splits = data.find_splits(src)
  if splits:
    names = ", ".join(p.name + "/" for p in splits.values())
    raise UserError(f"{src}: already has split folders ({names}); it looks already split. "
                    "`radjax split` takes a folder with one sub-folder per class.")
  classes = data.class_dirs(src)
  if len(classes) < 2:
    raise UserError(f"{src}: found {len(classes)} class folder(s) "
                    f"{[d.name for d in classes]}; splitting needs at least two")
  return classes


def _check_destination(src: pathlib.Path, dst: pathlib.Path):
  if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
    raise UserError(f"{dst}: already exists and is not empty; choose a new output directory")
  if dst.resolve().is_relative_to(src.resolve()):
    raise UserError(f"{dst}: is inside {src}; it would become a class folder of the source")


def split_dataset(src, dst, val: int, seed: int, folds: int = 0, test: int = 0) -> dict:
  """Copies SRC/<class>/* into DST/TRAIN|VAL|TEST/<class>/ and writes DST/manifest.csv.

  `val` and `test` are image totals over all classes; `folds` >= 2 adds a stratified k-fold
  assignment of the training images. Returns {"counts": {split: {class: n}}, "manifest": path,
  "folds": folds}.
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
        rows.append({"path": target.relative_to(dst).as_posix(), "class": cls, "split": split,
                     "fold": fold_of.get(path, "")})
  manifest = dst / MANIFEST
  with manifest.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  result_counts = {split: {cls: len(paths) for cls, paths in per_class.items()}
                   for split, per_class in assigned.items() if split != "test" or test}
  return {"counts": result_counts, "manifest": str(manifest), "folds": folds}


def format_summary(result: dict, dst) -> str:
  """One line per split for the command line."""
  lines = [f"Split into {dst}:"]
  for split, per_class in result["counts"].items():
    detail = ", ".join(f"{cls} {n}" for cls, n in per_class.items())
    lines.append(f"  {SPLIT_FOLDERS[split]:<5} {sum(per_class.values()):>5}  ({detail})")
  folds = f", {result['folds']} cross-validation folds" if result["folds"] else ""
  lines.append(f"Manifest: {result['manifest']}{folds}")
  return "\n".join(lines)
