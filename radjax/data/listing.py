"""Listing a dataset: class folders (the paper's Fig. 1 layout) or CSV manifests, checked file by file.

    DATA_DIR/TRAIN/<class>/**/*.png|jpg|dcm   (split names case-insensitive; also train, val,
    DATA_DIR/VAL/<class>/...                   validation, test; sub-folders of a class count)

    MANIFEST.csv: path,label[,patient_id][,split]  (paths relative to the CSV; `list_manifest`)
    MANIFEST.csv: path,[patient_id,][split,]FINDING_A,FINDING_B,...  one 1/0/blank column per
                  label (multilabel: blank or -1 = unknown, masked out of loss and metrics)

Class names are the sorted folder names of the training split (abd = 0, chest = 1 for the paper's
data), or the sorted label values of a manifest. Every file is checked once when the dataset is listed; files that cannot be read are skipped
with a warning that names them, so no image is silently dropped or mislabelled.

The listed examples feed the pipeline over files (`radjax.data.files`); `resolve_data_dir` finds
the data (or downloads the tutorial's).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

from radjax.data import images
from radjax.errors import UserError

log = logging.getLogger("radjax")

SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
PROGRESS_MIN = 1000  # images: listing fewer takes seconds and shows no progress bar


@dataclasses.dataclass(frozen=True)
class Example:
  path: str
  label: int | tuple[int, ...]  # multilabel: one 1/0/-1 (unknown) per label
  gray: bool = False  # all channels equal (known when the listing decoded the file)
  high_bit: bool = False  # more than 8 bits per value (16-bit PNG, DICOM): cached as 16 bits
  patient_id: str = ""  # a manifest's patient_id cell ("" without one)


@dataclasses.dataclass
class Folders:
  """The listed dataset: class names, examples per split, and the files that were skipped."""
  root: pathlib.Path
  class_names: list[str]
  splits: dict[str, list[Example]]
  skipped: list[tuple[str, str]]  # (path, reason)
  multilabel: bool = False  # class_names are then label names, each example has a label vector

  def counts(self) -> dict[str, dict[str, int]]:
    """Images per class; for multilabel data, positive images per label."""
    if self.multilabel:
      return {split: {name: sum(e.label[i] == 1 for e in examples)
                      for i, name in enumerate(self.class_names)}
              for split, examples in self.splits.items()}
    return {split: {name: sum(e.label == i for e in examples)
                    for i, name in enumerate(self.class_names)}
            for split, examples in self.splits.items()}


def find_splits(data_dir) -> dict[str, pathlib.Path]:
  """Maps "train"/"val"/"test" to the split folders present in `data_dir`."""
  root = pathlib.Path(data_dir)
  if root.is_file():
    raise UserError(f"{root}: is a file; this command reads a data folder (TRAIN/ and VAL/, or "
                    "one folder per class)" + (", not a CSV manifest" if root.suffix.lower() == ".csv"
                                              else ""))
  if not root.is_dir():
    raise UserError(f"{root}: no such data directory")
  found: dict[str, pathlib.Path] = {}
  for child in sorted(root.iterdir()):
    split = SPLIT_ALIASES.get(child.name.lower())
    if child.is_dir() and split:
      if split in found:
        raise UserError(f"{root}: both {found[split].name}/ and {child.name}/ name the {split} split")
      found[split] = child
  return found


def class_dirs(split_dir: pathlib.Path) -> list[pathlib.Path]:
  """The class folders of one split folder, sorted by name (hidden folders are not classes)."""
  return sorted((d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
                key=lambda d: d.name)


def stray_files(split_dir: pathlib.Path) -> list[pathlib.Path]:
  """Files lying directly in a split folder, outside every class folder (they have no label)."""
  return sorted(p for p in split_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def list_folders(data_dir, splits=("train", "val"), validate: bool = True,
                 dicom_voi: str = "auto") -> Folders:
  """Lists the dataset under `data_dir`; `splits` are required ("test" is optional if absent).

  Class folders may hold sub-folders (one per patient, say): their images are included. With
  `validate`, every image is decoded once; unreadable ones are skipped with a warning naming them.
  Every class needs at least one readable image in every listed split (a missing class folder
  counts as empty): a validation split without one class has no ROC AUC.
  """
  root = pathlib.Path(data_dir)
  present = find_splits(root)
  missing = [s for s in splits if s not in present and s != "test"]
  if missing:
    names = ", ".join(p.name + "/" for p in root.iterdir() if p.is_dir()) or "nothing"
    raise UserError(f"{root}: no {missing[0].upper()} folder (found {names}). Expected split folders "
                    "TRAIN/ and VAL/ (optional TEST/), each with one folder per class.")
  if "train" in present:
    reference = present["train"]
  else:  # evaluating a TEST or VAL folder on its own: take its classes
    reference = present[next(s for s in splits if s in present)]
  class_names = [d.name for d in class_dirs(reference)]
  if len(class_names) < 2:
    raise UserError(f"{reference}: found {len(class_names)} class folder(s) {class_names}; a classifier "
                    "needs at least two (e.g. abd/ and chest/).")
  skipped: list[tuple[str, str]] = []
  result: dict[str, list[Example]] = {}
  for split in splits:
    if split not in present:
      continue
    examples = []
    folders = {d.name: d for d in class_dirs(present[split])}
    for name, class_dir in folders.items():
      if name not in class_names:
        raise UserError(f"{class_dir}: class '{name}' is not a class of {reference} "
                        f"({', '.join(class_names)})")
    for label, name in enumerate(class_names):
      class_dir = folders.get(name)
      if class_dir is None:
        raise UserError(f"{present[split]}: no '{name}' folder; every class needs images in every "
                        f"split (classes: {', '.join(class_names)})")
      files, others = images.list_image_files(class_dir)
      skipped += others
      reasons = list(others)
      for example in checked_examples([(path, label, "") for path in files], validate,
                                      dicom_voi):
        if isinstance(example, Example):
          examples.append(example)
        else:
          skipped.append(example)
          reasons.append(example)
      if not any(e.label == label for e in examples):
        detail = "; ".join(f"{pathlib.Path(p).name}: {r}" for p, r in reasons[:5])
        more = f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else ""
        raise UserError(f"{class_dir}: no readable images in this class folder"
                        + (f": {detail}{more}" if detail else " (it is empty)"))
    for stray in stray_files(present[split]):
      skipped.append((str(stray), "file outside a class folder"))
    result[split] = examples
  _warn_skipped(skipped, result)
  return Folders(root, class_names, result, skipped)


def checked_examples(jobs: list[tuple[str, int, str]], validate: bool, dicom_voi: str) -> list:
  """`checked_example` of each (path, label, patient id), in order, decoded on every core (the
  decoders release the GIL: 1.7x on 2 cores), with a progress bar on a terminal for long lists."""
  import os
  from concurrent.futures import ThreadPoolExecutor

  from tqdm import tqdm

  def check(job):
    return checked_example(job[0], job[1], validate, dicom_voi, job[2])

  if not validate:
    return [check(job) for job in jobs]
  with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    return list(tqdm(pool.map(check, jobs), total=len(jobs), desc="checking images",
                     unit="image", leave=False, disable=None if len(jobs) >= PROGRESS_MIN else True))


def checked_example(path: str, label: int, validate: bool, dicom_voi: str, patient_id: str = ""):
  """The file's Example, decoded once when `validate`; or (path, reason) when it is unreadable."""
  gray = high_bit = False
  if validate:
    try:
      gray = images.is_gray(images.read_image(path, dicom_voi))
      high_bit = images.bit_depth(path) > 8
    except images.ImageReadError as e:
      return (path, str(e).removeprefix(f"{path}: "))
  return Example(path, label, gray, high_bit, patient_id)


def _warn_skipped(skipped, result) -> None:
  if skipped:
    for path, reason in skipped:
      log.warning("skipped %s: %s", path, reason)
    total = sum(map(len, result.values())) + len(skipped)
    log.warning("skipped %d of %d files (listed above)", len(skipped), total)


# A CSV manifest: one row per image. The label column may be called "label" or "class" (what
# `radjax split` writes); "split" (train/val/test, any alias) and "patient_id" are optional.
LABEL_COLUMNS = ("label", "class")
# Columns that are not labels in a multilabel manifest (one 1/0/blank column per label).
MANIFEST_COLUMNS = ("path", "split", "patient_id")
# A multilabel cell: 1 positive, 0 negative; blank or -1 (CheXpert's "uncertain") unknown.
MULTILABEL_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "": -1, "-1": -1, "-1.0": -1}


def read_manifest(csv_path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """(column names, [(line number, {column: value})]) of a CSV, names and values stripped.

  UTF-8, with or without the byte-order mark that Excel's "CSV UTF-8" writes (invisible, it would
  otherwise stick to the first column's name); other encodings are refused in one line, since a
  guessed one would turn accented file names into paths that do not exist."""
  import csv

  try:
    with pathlib.Path(csv_path).open(newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      columns = [c.strip() for c in reader.fieldnames or []]
      rows = [(line, {k.strip(): (v or "").strip() for k, v in row.items() if k})
              for line, row in enumerate(reader, start=2)]
  except UnicodeDecodeError as e:
    raise UserError(f"{csv_path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                    "save it as UTF-8 (in Excel: CSV UTF-8)") from None
  return columns, rows


def same_spelling(value: str) -> str:
  """What two labels that mean the same class share: case and surrounding space ignored, numbers
  by value ("1" and "1.0", as pandas writes integers of a column with blanks)."""
  try:
    return repr(float(value))
  except ValueError:
    return value.strip().casefold()


def refuse_near_duplicate_labels(labels, where) -> None:
  """A one-line error when label values differ only in spelling: they would become extra classes."""
  groups: dict[str, list[str]] = {}
  for label in sorted(set(labels)):
    groups.setdefault(same_spelling(label), []).append(label)
  clashes = [" and ".join(repr(v) for v in group) for group in groups.values() if len(group) > 1]
  if clashes:
    raise UserError(f"{where}: labels {'; '.join(clashes)} differ only in case or number format "
                    "and would train as different classes; write each class one way")


def manifest_path(text: str) -> str:
  """A manifest's path as one spelling: "/" separators, no "./" (so duplicates are found)."""
  return pathlib.PurePosixPath(text.strip().replace("\\", "/")).as_posix()


def list_manifest(csv_path, splits=("train", "val"), validate: bool = True,
                  dicom_voi: str = "auto", pooled: bool = False) -> Folders:
  """Lists a CSV manifest (`path,label[,patient_id][,split]`, paths relative to the CSV) as
  `list_folders` lists class folders: the same Examples, the same rules. Class names are the
  sorted label values. A row that cannot be trusted (empty path or label, an unknown split, a
  path listed twice) is an error naming its line; a missing or unreadable file is skipped with a
  warning naming it, and a class without readable images in a split is an error. Without a split
  column, every row belongs to the one split asked for. `pooled` (cross-validation, which pools the
  splits): every class needs images in the splits together, not in each."""
  csv_path = pathlib.Path(csv_path)
  if not csv_path.is_file():
    raise UserError(f"{csv_path}: no such CSV file")
  root = csv_path.parent
  columns, rows = read_manifest(csv_path)
  label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
  label_names = ([c for c in columns if c not in MANIFEST_COLUMNS]
                 if label_column is None else [])
  multilabel = len(label_names) >= 2
  if "path" not in columns or (label_column is None and not multilabel):
    raise UserError(f"{csv_path}: needs the columns path and label (or class), or path and one "
                    f"1/0/blank column per label (two or more); found "
                    f"{', '.join(columns) or 'none'}")
  if "split" not in columns and len(splits) > 1:  # one split asked for: every row is in it
    raise UserError(f"{csv_path}: no split column; {' and '.join(splits)} rows are needed "
                    "(a column split with train, val or test)")
  seen: dict[str, int] = {}
  listed = []  # (line, path, label value, split): every row checked before any file is read
  for line, r in rows:
    where = f"{csv_path}:{line}"
    if not r["path"] or (not multilabel and not r[label_column]):
      raise UserError(f"{where}: empty {'path' if not r['path'] else label_column}; every row "
                      "needs both")
    split = SPLIT_ALIASES.get(r.get("split", "").lower()) if "split" in columns else splits[0]
    if split is None:
      raise UserError(f"{where}: split {r.get('split')!r} is not one of train, val, test")
    relative = manifest_path(r["path"])
    if pathlib.PurePosixPath(relative).is_absolute() or ".." in relative.split("/"):
      raise UserError(f"{where}: path {r['path']} must be relative to the CSV's folder, inside it")
    if relative in seen:  # also "./a.png" after "a.png": one image in two rows, maybe two splits
      raise UserError(f"{where}: {r['path']} is listed again (first on line {seen[relative]})")
    seen[relative] = line
    listed.append((relative, _label_vector(r, label_names, where) if multilabel
                   else r[label_column], split, r.get("patient_id", "").strip()))
  if not multilabel:
    refuse_near_duplicate_labels([label for _, label, _, _ in listed], csv_path)
  class_names = label_names if multilabel else sorted({label for _, label, _, _ in listed})
  if len(class_names) < 2:
    raise UserError(f"{csv_path}: found {len(class_names)} label value(s) {class_names}; a "
                    "classifier needs at least two")
  result: dict[str, list[Example]] = {s: [] for s in splits}
  skipped: list[tuple[str, str]] = []
  jobs, split_of = [], []
  for relative_path, label, split, patient in listed:
    if split not in result:
      continue
    path = str(root / relative_path)
    if not pathlib.Path(path).is_file():
      skipped.append((path, "no such file (listed in the CSV)"))
      continue
    jobs.append((path, label if multilabel else class_names.index(label), patient))
    split_of.append(split)
  for split, example in zip(split_of, checked_examples(jobs, validate, dicom_voi)):
    (result[split] if isinstance(example, Example) else skipped).append(example)
  checked = {"/".join(result): [e for examples in result.values() for e in examples]} if pooled \
      else result
  for split, examples in checked.items():
    if multilabel:  # training needs both values of every label; evaluation reports what it has
      for k, name in enumerate(class_names):
        for value in (1, 0) if split.startswith("train") else ():
          if not any(e.label[k] == value for e in examples):
            raise UserError(f"{csv_path}: no readable image with {name}={value} in split {split}; "
                            "every label needs positive and negative training images")
      continue
    if split == "test" and not examples:
      continue
    for label, name in enumerate(class_names):
      if not any(e.label == label for e in examples):
        raise UserError(f"{csv_path}: no readable {name} image in split {split}; every class "
                        f"needs images in " + ("the rows" if pooled else "every split")
                        + f" (classes: {', '.join(class_names)})")
  _warn_skipped(skipped, result)
  return Folders(root, class_names, {s: e for s, e in result.items() if e}, skipped, multilabel)


def _label_vector(row: dict, label_names, where: str) -> tuple[int, ...]:
  """A multilabel row's 1/0/-1 (unknown) per label, or an error naming the line and column."""
  values = []
  for name in label_names:
    value = MULTILABEL_VALUES.get(row[name])
    if value is None:
      raise UserError(f"{where}: {name} is {row[name]!r}; a label column holds 1, 0, or blank "
                      "or -1 (unknown)")
    values.append(value)
  return tuple(values)


# The tutorial's own archive (github.com/paras42/Hello_World_Deep_Learning); no hash is published.
PUBLIC_DATASET_URL = ("https://github.com/paras42/Hello_World_Deep_Learning/raw/master/"
                      "Open_I_abd_vs_CXRs.zip")
DOWNLOAD_TIMEOUT_S = 30


def resolve_data_dir(data_dir: str = "") -> pathlib.Path:
  """`data_dir`, else $RADJAX_DATA_DIR, else the public dataset downloaded into the cache."""
  import os

  chosen = data_dir or os.environ.get("RADJAX_DATA_DIR", "")
  if chosen:
    return pathlib.Path(chosen).expanduser()
  return download_public_dataset()


def download_public_dataset() -> pathlib.Path:
  """Downloads and extracts the tutorial's 75 images once; returns the folder holding TRAIN/."""
  import tempfile
  import urllib.error
  import urllib.request
  import zipfile

  from radjax.cache import cache_dir

  target = cache_dir() / "open_i_abd_vs_cxr"
  found = sorted(p.parent for p in target.glob("**/TRAIN")) if target.is_dir() else []
  if found:
    return found[0]
  print(f"Downloading the tutorial's dataset from {PUBLIC_DATASET_URL} ...", flush=True)
  try:
    with urllib.request.urlopen(PUBLIC_DATASET_URL, timeout=DOWNLOAD_TIMEOUT_S) as response, \
        tempfile.TemporaryFile() as archive:
      archive.write(response.read())
      archive.seek(0)
      with zipfile.ZipFile(archive) as z:
        z.extractall(target)
  except (urllib.error.URLError, OSError, zipfile.BadZipFile) as e:
    raise UserError(f"No data directory given and the public dataset could not be downloaded ({e}). "
                    "Pass --config.data_dir=DIR or set RADJAX_DATA_DIR (DIR holds TRAIN/ and VAL/).") from None
  found = sorted(p.parent for p in target.glob("**/TRAIN"))
  if not found:
    raise UserError(f"{PUBLIC_DATASET_URL}: the archive has no TRAIN folder; extracted to {target}")
  return found[0]
