"""Class-folder datasets (the paper's Fig. 1 layout), CSV manifests, and their tf.data pipelines.

    DATA_DIR/TRAIN/<class>/**/*.png|jpg|dcm   (split names case-insensitive; also train, val,
    DATA_DIR/VAL/<class>/...                   validation, test; sub-folders of a class count)

    MANIFEST.csv: path,label[,patient_id][,split]  (paths relative to the CSV; `list_manifest`)
    MANIFEST.csv: path,[patient_id,][split,]FINDING_A,FINDING_B,...  one 1/0/blank column per
                  label (multilabel: blank or -1 = unknown, masked out of loss and metrics)

Class names are the sorted folder names of the training split (abd = 0, chest = 1 for the paper's
data), or the sorted label values of a manifest. Every file is checked once when the dataset is listed; files that cannot be read are skipped
with a warning that names them, so no image is silently dropped or mislabelled.

The pipeline follows flax' examples: decode + resize + quantize (radjax.preprocess) -> cache ->
shuffle (per-epoch seed) -> map(augment) -> batch -> prefetch. TensorFlow runs on the CPU only and
is imported lazily, so the model and the train step import without it.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Iterator

import numpy as np

from radjax import augment as aug, config as config_lib, images, preprocess
from radjax.preprocess import tensorflow
from radjax.errors import UserError

log = logging.getLogger("radjax")

SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# Seed stream of the recalibration order (epochs use (seed, epoch) with epoch >= 1).
RECALIBRATION_STREAM = 0
# Third seed word of balanced sampling's per-epoch plan ((seed, epoch) orders a shuffled epoch).
BALANCED_STREAM = 1
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
      gray = is_gray(images.read_image(path, dicom_voi))
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
  """(column names, [(line number, {column: value})]) of a CSV, names and values stripped."""
  import csv

  with pathlib.Path(csv_path).open(newline="") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in reader.fieldnames or []]
    rows = [(line, {k.strip(): (v or "").strip() for k, v in row.items() if k})
            for line, row in enumerate(reader, start=2)]
  return columns, rows


def manifest_path(text: str) -> str:
  """A manifest's path as one spelling: "/" separators, no "./" (so duplicates are found)."""
  return pathlib.PurePosixPath(text.strip().replace("\\", "/")).as_posix()


def list_manifest(csv_path, splits=("train", "val"), validate: bool = True,
                  dicom_voi: str = "auto") -> Folders:
  """Lists a CSV manifest (`path,label[,patient_id][,split]`, paths relative to the CSV) as
  `list_folders` lists class folders: the same Examples, the same rules. Class names are the
  sorted label values. A row that cannot be trusted (empty path or label, an unknown split, a
  path listed twice) is an error naming its line; a missing or unreadable file is skipped with a
  warning naming it, and a class without readable images in a split is an error. Without a split
  column, every row belongs to the one split asked for."""
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
  for split, examples in result.items():
    if multilabel:  # training needs both values of every label; evaluation reports what it has
      for k, name in enumerate(class_names):
        for value in (1, 0) if split == "train" else ():
          if not any(e.label[k] == value for e in examples):
            raise UserError(f"{csv_path}: no readable image with {name}={value} in split train; "
                            "every label needs positive and negative training images")
      continue
    if split == "test" and not examples:
      continue
    for label, name in enumerate(class_names):
      if not any(e.label == label for e in examples):
        raise UserError(f"{csv_path}: no readable {name} image in split {split}; every class "
                        f"needs images in every split (classes: {', '.join(class_names)})")
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

  from radjax.weights import cache_dir

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


# ----------------------------------------------------------------------------------------------
# tf.data
# ----------------------------------------------------------------------------------------------

def balanced_plan(num_classes: int, seed: int, epoch: int, count: int):
  """Balanced sampling's epoch of `count` positions, a pure function of (seed, epoch): the class
  of each position (every class fills count // num_classes of them, the remainder goes to
  distinct random classes, in a seeded random order) and one order seed per class (the pipeline
  takes each class' images in that seeded order, repeated as needed)."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, BALANCED_STREAM]))
  choices = np.concatenate([np.repeat(np.arange(num_classes), count // num_classes),
                            rng.choice(num_classes, count % num_classes, replace=False)])
  rng.shuffle(choices)
  class_seeds = rng.integers(0, 2**62, size=num_classes, dtype=np.int64)
  return choices.astype(np.int64), class_seeds


def is_gray(pixels: np.ndarray) -> bool:
  return bool(np.array_equal(pixels[..., 0], pixels[..., 1])
              and np.array_equal(pixels[..., 0], pixels[..., 2]))


def cache_layout(examples: list[Example]) -> tuple[int, bool]:
  """(channels, high_bit) of these examples' cache: one channel when every image is gray, 16 bits
  when any has more than 8."""
  return (1 if examples and all(e.gray for e in examples) else 3,
          any(e.high_bit for e in examples))


def decoded_dataset(examples: list[Example], config, channels: int | None = None,
                    high_bit: bool | None = None):
  """(image SxSxC, label, index) for each example: decoded, resized and quantized (not cached).

  When every image is gray (radiographs, even when stored as RGB), one channel is kept (C=1)
  until `to_model_input`, so resizing and augmentation resample a third of the pixels.
  `channels` and `high_bit` (a 16-bit cache) override what these examples alone would give.
  """
  tf = tensorflow()
  own_channels, own_high_bit = cache_layout(examples)
  channels = own_channels if channels is None else channels
  high_bit = own_high_bit if high_bit is None else high_bit
  dtype = preprocess.cache_dtype(high_bit)

  def load(path):
    return images.read_image(path.decode(), config.dicom_voi)[..., :channels]

  def decode(path, high_bit, label, index):
    image = tf.numpy_function(load, [path], tf.float32, stateful=False)
    image = preprocess.resize(tf.ensure_shape(image, [None, None, channels]), config)
    return preprocess.quantize(image, high_bit, dtype), label, index

  columns = ([e.path for e in examples], np.array([e.high_bit for e in examples]),
             np.array([e.label for e in examples], np.int32),
             np.arange(len(examples), dtype=np.int64))
  ds = tf.data.Dataset.from_tensor_slices(columns)
  return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def rows_of(ds, batch_size: int, shard: tuple[int, int]):
  """Process i of n's rows [i * b, (i + 1) * b) of every global batch of `batch_size` examples
  in `ds` (b = batch_size / n): taken before the costly per-example work."""
  index, count = shard
  if count == 1:
    return ds
  rows = batch_size // count
  return ds.enumerate().filter(lambda k, example: (k % batch_size) // rows == index) \
      .map(lambda k, example: example)


def refuse_class_settings(config) -> None:
  """Multilabel data: the settings that act on classes cannot apply."""
  if config.class_weight:
    raise UserError(f"--config.class_weight={config.class_weight}: weights are per class; "
                    "multilabel data has independent labels (leave it empty)")
  if config.sampling == "balanced":
    raise UserError("--config.sampling=balanced: balances classes; multilabel data has "
                    "independent labels (use shuffle)")


class Pipeline:
  """Input pipelines over listed folders. Decoded images are cached after the first pass.

  Each split's examples are put in path order first, so batches (and everything computed from
  them) depend on which files there are, not on the order a listing returned them in.

  Several processes (`shard=(i, n)`): every process caches the whole set (it fits in memory; a
  global shuffle can put any image in any batch), makes the one global order of every epoch and
  reads, augments and prepares only its own rows of each global batch, so n processes train
  exactly what one does. Evaluation gives each process a contiguous 1/n of a split. A streamed
  (`streaming`) dataset gives each process its own 1/n of the files instead: see
  `prepared.PreparedPipeline`.
  """

  streaming = False  # True: read from disk every epoch (prepared datasets above the memory budget)

  def __init__(self, folders: Folders, config):
    self.config = config
    self.folders = folders
    self.examples = {split: self._ordered(examples) for split, examples in folders.splits.items()}
    if folders.multilabel:
      refuse_class_settings(config)
    self._cached = {split: self._decoded(split) for split in self.examples}
    self.class_weights = None if folders.multilabel else (config_lib.class_weights(
        config, [e.label for e in self.examples["train"]], folders.class_names)
        if "train" in self.examples else None)  # evaluation pipelines have no training labels

  @property
  def class_names(self) -> list[str]:
    return self.folders.class_names

  @property
  def multilabel(self) -> bool:
    return self.folders.multilabel

  def counts(self) -> dict[str, dict[str, int]]:
    return self.folders.counts()

  def num_examples(self, split: str) -> int:
    return len(self.examples[split])

  def cached(self, split: str):
    """(image, label, index) of every example of `split` in path order: the decoded, resized,
    quantized cache itself (what `radjax export-arrays` writes)."""
    return self._cached[split].as_numpy_iterator()

  def steps_per_epoch(self, batch_size: int) -> int:
    return self.num_examples("train") // batch_size

  def _ordered(self, examples: list[Example]) -> list[Example]:
    """A split's examples in the order of its `index`: path order."""
    return sorted(examples, key=lambda e: e.path)

  def _decoded(self, split: str):
    """`decoded_dataset` of the split's examples, cached in memory after the first pass."""
    return decoded_dataset(self.examples[split], self.config).cache()

  def _examples_of(self, split: str, start: int, stop: int):
    """(image, label, index) of examples start..stop-1 of `split` in path order."""
    return self._cached[split].skip(start).take(stop - start)

  def shuffle_buffer(self, split: str) -> int:
    """How many examples a shuffle of `split` mixes: all of them (the cache is in memory)."""
    return self.num_examples(split)

  def train_dataset(self, batch_size: int, first_epoch: int, last_epoch: int | None = None,
                    shard: tuple[int, int] = (0, 1)):
    """Augmented, shuffled batches of epochs first_epoch..last_epoch (default: first_epoch only).

    `shard=(i, n)`: process i of n gets rows [i * b, (i + 1) * b) of every global batch of
    `batch_size`, with b = batch_size / n, and augments only those: the global order is the same
    in every process, so the n processes together see exactly the one-process batches.

    Each epoch is a pure function of (seed, epoch): its order and its transforms are computed on
    the host from those two numbers, so a resumed run sees the same batches as an uninterrupted
    one. One pipeline spans all the epochs: building one per epoch (tracing, thread start-up,
    refilling the prefetch buffer) costs a large share of a short epoch, and a pipeline that runs
    on also augments the next epoch while this one is being evaluated.
    """
    tf, config = tensorflow(), self.config
    n = self.num_examples("train")
    steps = self.steps_per_epoch(batch_size)

    def plan(epoch):  # host: this epoch's shuffle seed and one transform row per example index
      epoch = int(epoch)
      order_seed = np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0]
      transforms = aug.epoch_transforms(config.seed, epoch, n, config.augment,
                                        config.image_size, config.image_size)
      return np.int64(order_seed), transforms

    index, count = shard
    rows = batch_size // count

    def epoch_examples(epoch):
      order_seed, transforms = tf.numpy_function(plan, [epoch], (tf.int64, tf.float32),
                                                 stateful=False)
      transforms = tf.ensure_shape(transforms, [n, 8])
      if self.streaming and count > 1:  # this process's own 1/n of the files, its own order
        start, stop = preprocess.process_range(n, shard)
        ds = self._examples_of("train", start, stop).shuffle(
            min(self.shuffle_buffer("train"), stop - start), seed=order_seed,
            reshuffle_each_iteration=False).take(steps * rows)
      else:  # the global order; this process's rows of it. Whole batches only: none spans epochs.
        ds = rows_of(self._cached["train"].shuffle(self.shuffle_buffer("train"), seed=order_seed,
                                                   reshuffle_each_iteration=False)
                     .take(steps * batch_size), batch_size, shard)
      return ds.map(lambda image, label, index: (image, label, tf.gather(transforms, index)))

    positions = steps * batch_size
    num_classes = len(self.class_names)
    sizes = np.bincount([e.label for e in self.examples["train"]], minlength=num_classes) \
        if config.sampling == "balanced" else None

    def balanced_plan_of(epoch):  # host: classes per position, class seeds, transforms by position
      choices, class_seeds = balanced_plan(num_classes, config.seed, int(epoch), positions)
      transforms = aug.epoch_transforms(config.seed, int(epoch), positions, config.augment,
                                        config.image_size, config.image_size)
      return choices, class_seeds, transforms

    def balanced_examples(epoch):
      choices, class_seeds, transforms = tf.numpy_function(
          balanced_plan_of, [epoch], (tf.int64, tf.int64, tf.float32), stateful=False)
      choices = tf.ensure_shape(choices, [positions])
      class_seeds = tf.ensure_shape(class_seeds, [num_classes])
      transforms = tf.ensure_shape(transforms, [positions, 8])
      per_class = [self._cached["train"].filter(lambda image, label, index, c=c: label == c)
                   .shuffle(min(int(sizes[c]), self.shuffle_buffer("train")),
                            seed=class_seeds[c], reshuffle_each_iteration=False)
                   .repeat() for c in range(num_classes)]
      ds = tf.data.Dataset.choose_from_datasets(per_class,
                                                tf.data.Dataset.from_tensor_slices(choices))
      # A position's transform, not an image's: an image drawn twice is augmented twice anew.
      # Every process draws the global plan (even from a stream) and keeps its rows.
      return rows_of(ds.enumerate().map(
          lambda position, example: (example[0], example[1], tf.gather(transforms, position))),
          batch_size, shard)

    weights = self.class_weights

    def augment(image, label, transform):
      if config.augment_on == "device":  # the jitted step augments (radjax.device_augment)
        example = {"image": image, "label": label, "transform": transform}
      else:
        image = preprocess.dequantize(image)
        if config.augment.enabled:
          image = aug.apply_transform(image, transform, config.augment.fill_mode,
                                      config.augment.interpolation)
        example = {"image": preprocess.to_model_input(image, config.value_range), "label": label}
      if weights is not None:  # the example's loss weight (class_weight)
        example["weight"] = tf.gather(tf.constant(weights), label)
      return example

    last_epoch = first_epoch if last_epoch is None else last_epoch
    ds = tf.data.Dataset.range(first_epoch, last_epoch + 1).flat_map(
        balanced_examples if config.sampling == "balanced" else epoch_examples)
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(rows, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def train_batches(self, batch_size: int, first_epoch: int, last_epoch: int | None = None,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, np.ndarray]]:
    """`train_dataset` as numpy: steps_per_epoch(batch_size) batches per epoch, in order."""
    return self.train_dataset(batch_size, first_epoch, last_epoch, shard).as_numpy_iterator()

  def _prepared(self, ds):
    """Un-augmented examples as the model's input (or cached integers, for device augmentation:
    a quarter of the bytes to the device)."""
    tf, config = tensorflow(), self.config

    def prepare(image, label, index):
      if config.augment_on == "device":
        return {"image": image, "label": label, "index": index}
      return {"image": preprocess.to_model_input(preprocess.dequantize(image), config.value_range),
              "label": label, "index": index}

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def eval_batches(self, split: str, batch_size: int, shard: tuple[int, int] = (0, 1)
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Un-augmented batches of `split` in path order. The last batch is padded to `batch_size`;
    `mask` marks real examples and `index` their place in the split, so every image counts exactly
    once. `shard=(i, n)`: process i's contiguous 1/n of the split in batches of batch_size / n
    (`preprocess.padded_batches`; `Steps.logits_of(..., process_local=True)` joins them)."""
    tf = tensorflow()
    start, stop = preprocess.process_range(self.num_examples(split), shard)
    ds = self._prepared(self._examples_of(split, start, stop)).batch(batch_size // shard[1])
    empty = {k: np.zeros((0, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
             for k, spec in ds.element_spec.items()}
    yield from preprocess.padded_batches(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator(),
                                         self.num_examples(split), batch_size, shard, empty)

  def recalibration_batches(self, batch_size: int, shard: tuple[int, int] = (0, 1)
                            ) -> Iterator[dict[str, np.ndarray]]:
    """Full batches of the un-augmented training images in one seeded shuffled order, for
    precise BatchNorm: batches that mix the classes (files are listed class by class), and the
    same batches in every epoch and after a resume. The remainder (n mod batch_size) is left out,
    so every batch weighs the same in the pooled statistics. `shard=(i, n)`: process i's rows of
    each batch (a stream: batches of its own 1/n of the files)."""
    tf, config = tensorflow(), self.config
    n = self.num_examples("train")
    seed = int(np.random.SeedSequence([config.seed, RECALIBRATION_STREAM]).generate_state(1)[0])
    rows = batch_size // shard[1]
    if self.streaming and shard[1] > 1:
      start, stop = preprocess.process_range(n, shard)
      ds = self._examples_of("train", start, stop).shuffle(
          min(self.shuffle_buffer("train"), stop - start), seed=seed,
          reshuffle_each_iteration=False).take(n // batch_size * rows)
    else:
      ds = rows_of(self._cached["train"].shuffle(self.shuffle_buffer("train"), seed=seed,
                                                 reshuffle_each_iteration=False)
                   .take(n // batch_size * batch_size), batch_size, shard)
    return self._prepared(ds).batch(rows, drop_remainder=True).prefetch(tf.data.AUTOTUNE) \
        .as_numpy_iterator()
