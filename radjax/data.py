"""Class-folder datasets (the paper's Fig. 1 layout) and their tf.data pipelines.

    DATA_DIR/TRAIN/<class>/*.png|jpg|dcm     (split names case-insensitive; also train, val,
    DATA_DIR/VAL/<class>/...                  validation, test)

Class names are the sorted folder names of the training split (abd = 0, chest = 1 for the paper's
data). Every file is checked once when the dataset is listed; files that cannot be read are skipped
with a warning that names them, so no image is silently dropped or mislabelled.

The pipeline follows flax' examples: decode + resize -> cache -> shuffle (per-epoch seed) ->
map(augment) -> batch -> prefetch. TensorFlow runs on the CPU only and is imported lazily, so the
model and the train step import without it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
from typing import Iterator

import numpy as np

from radjax import augment as aug, images
from radjax.errors import UserError

log = logging.getLogger("radjax")

SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class Example:
  path: str
  label: int
  gray: bool = False  # all channels equal (known when the listing decoded the file)


@dataclasses.dataclass
class Folders:
  """The listed dataset: class names, examples per split, and the files that were skipped."""
  root: pathlib.Path
  class_names: list[str]
  splits: dict[str, list[Example]]
  skipped: list[tuple[str, str]]  # (path, reason)

  def counts(self) -> dict[str, dict[str, int]]:
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


def list_files(class_dir: pathlib.Path, skipped: list) -> list[str]:
  """Image files of one class folder, sorted; other files are appended to `skipped` with why."""
  files = []
  for path in sorted(class_dir.iterdir()):
    if path.name.startswith(".") or path.is_dir():
      continue  # hidden files (.DS_Store) and nested folders are not part of the layout
    if not images.is_image_file(path):
      skipped.append((str(path), "not an image file (expected .png, .jpg, .jpeg or DICOM)"))
      continue
    files.append(str(path))
  return files


def stray_files(split_dir: pathlib.Path) -> list[pathlib.Path]:
  """Files lying directly in a split folder, outside every class folder (they have no label)."""
  return sorted(p for p in split_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def list_folders(data_dir, splits=("train", "val"), validate: bool = True,
                 dicom_voi: str = "auto") -> Folders:
  """Lists the dataset under `data_dir`; `splits` are required ("test" is optional if absent).

  With `validate`, every image is decoded once, and unreadable ones are skipped with a warning.
  """
  root = pathlib.Path(data_dir)
  present = find_splits(root)
  missing = [s for s in splits if s not in present and s != "test"]
  if missing:
    names = ", ".join(p.name + "/" for p in root.iterdir() if p.is_dir()) or "nothing"
    raise UserError(f"{root}: no {missing[0].upper()} folder (found {names}). Expected split folders "
                    "TRAIN/ and VAL/ (optional TEST/), each with one folder per class.")
  if "train" in present:
    class_names = [d.name for d in class_dirs(present["train"])]
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
    for class_dir in class_dirs(present[split]):
      if class_dir.name not in class_names:
        raise UserError(f"{class_dir}: class '{class_dir.name}' is not a class of {reference} "
                        f"({', '.join(class_names)})")
      label = class_names.index(class_dir.name)
      for path in list_files(class_dir, skipped):
        gray = False
        if validate:
          try:
            gray = is_gray(images.read_image(path, dicom_voi))
          except images.ImageReadError as e:
            skipped.append((path, str(e).removeprefix(f"{path}: ")))
            continue
        examples.append(Example(path, label, gray))
      if not any(e.label == label for e in examples):
        raise UserError(f"{class_dir}: no readable images in this class folder")
    for stray in stray_files(present[split]):
      skipped.append((str(stray), "file outside a class folder"))
    result[split] = examples
  if skipped:
    for path, reason in skipped:
      log.warning("skipped %s: %s", path, reason)
    total = sum(map(len, result.values())) + len(skipped)
    log.warning("skipped %d of %d files (listed above)", len(skipped), total)
  return Folders(root, class_names, result, skipped)


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

@functools.cache
def tensorflow():
  """Imports TensorFlow for the input pipeline, hidden from GPUs (JAX owns them)."""
  import os

  # TF's C++ start-up chatter (CUDA probing, CPU feature notes) is noise here; real pipeline
  # errors still raise Python exceptions.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  return tf


def to_model_range(image, value_range: str):
  """[0, 255] -> the network's input range: "unit" [0, 1] (the paper) or "inception" [-1, 1]."""
  if value_range == "unit":
    return image / 255.0
  if value_range == "inception":  # what Keras' ImageNet InceptionV3 weights were trained on
    return image / 127.5 - 1.0
  raise UserError(f"value_range={value_range!r}: expected 'unit' or 'inception'")


def resize(image, config):
  """Squashes (like Keras' flow_from_directory) or pads to square, then resizes to image_size."""
  tf = tensorflow()
  size = [config.image_size, config.image_size]
  if config.resize == "pad":
    return tf.image.resize_with_pad(image, *size, method=config.resize_method, antialias=True)
  if config.resize == "squash":
    return tf.image.resize(image, size, method=config.resize_method, antialias=True)
  raise UserError(f"resize={config.resize!r}: expected 'squash' or 'pad'")


def _decoded(examples: list[Example], config):
  """(image uint8 SxSxC, label, index) for each example, decoded and resized once, then cached.

  When every image is gray (radiographs, even when stored as RGB), one channel is kept (C=1)
  until `_rgb`, so resizing and augmentation resample a third of the pixels.
  """
  tf = tensorflow()
  channels = 1 if examples and all(e.gray for e in examples) else 3

  def load(path):
    return images.read_image(path.decode(), config.dicom_voi)[..., :channels]

  def decode(path, label, index):
    image = tf.numpy_function(load, [path], tf.float32, stateful=False)
    image = resize(tf.ensure_shape(image, [None, None, channels]), config)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label, index

  paths = [e.path for e in examples]
  labels = np.array([e.label for e in examples], np.int32)
  ds = tf.data.Dataset.from_tensor_slices((paths, labels, np.arange(len(examples), dtype=np.int64)))
  return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()


def is_gray(pixels: np.ndarray) -> bool:
  return bool(np.array_equal(pixels[..., 0], pixels[..., 1])
              and np.array_equal(pixels[..., 0], pixels[..., 2]))


def _rgb(images):
  """(..., 1 or 3) -> (..., 3): the network always sees three channels."""
  tf = tensorflow()
  shape = tf.concat([tf.shape(images)[:-1], [3]], 0)
  return tf.ensure_shape(tf.broadcast_to(images, shape), images.shape[:-1] + [3])


class Pipeline:
  """Input pipeline over listed folders. Decoded images are cached after the first pass."""

  def __init__(self, folders: Folders, config):
    self.config = config
    self.folders = folders
    self._cached = {split: _decoded(examples, config) for split, examples in folders.splits.items()}

  def num_examples(self, split: str) -> int:
    return len(self.folders.splits[split])

  def steps_per_epoch(self, batch_size: int) -> int:
    return self.num_examples("train") // batch_size

  def train_dataset(self, batch_size: int, first_epoch: int, last_epoch: int | None = None):
    """Augmented, shuffled batches of epochs first_epoch..last_epoch (default: first_epoch only).

    Each epoch is a pure function of (seed, epoch): its order and its transforms are computed on
    the host from those two numbers, so a resumed run sees the same batches as an uninterrupted
    one. One pipeline spans all the epochs: building one per epoch (tracing, thread start-up,
    refilling the prefetch buffer) cost a third of an epoch of the paper's 65 images, and a
    pipeline that runs on also augments the next epoch while this one is being evaluated.
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

    def epoch_examples(epoch):
      order_seed, transforms = tf.numpy_function(plan, [epoch], (tf.int64, tf.float32),
                                                 stateful=False)
      transforms = tf.ensure_shape(transforms, [n, 8])
      ds = self._cached["train"].shuffle(n, seed=order_seed, reshuffle_each_iteration=False)
      # Whole batches only, so the batches below never mix two epochs.
      return ds.take(steps * batch_size).map(
          lambda image, label, index: (image, label, tf.gather(transforms, index)))

    def augment(image, label, transform):
      image = tf.cast(image, tf.float32)
      if config.augment.enabled:
        image = aug.apply_transform(image, transform, config.augment.fill_mode,
                                    config.augment.interpolation)
      return {"image": _rgb(to_model_range(image, config.value_range)), "label": label}

    last_epoch = first_epoch if last_epoch is None else last_epoch
    ds = tf.data.Dataset.range(first_epoch, last_epoch + 1).flat_map(epoch_examples)
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def train_batches(self, batch_size: int, first_epoch: int,
                    last_epoch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """`train_dataset` as numpy: steps_per_epoch(batch_size) batches per epoch, in order."""
    return self.train_dataset(batch_size, first_epoch, last_epoch).as_numpy_iterator()

  def eval_batches(self, split: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Un-augmented batches of `split` in file order. The last batch is padded to `batch_size`;
    `mask` marks real examples, so every image counts exactly once."""
    tf, config = tensorflow(), self.config

    def prepare(image, label, index):
      return {"image": _rgb(to_model_range(tf.cast(image, tf.float32), config.value_range)),
              "label": label, "index": index}

    ds = self._cached[split].map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for batch in ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
      yield pad_batch(batch, batch_size)


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads every array to `batch_size` rows (repeating zeros) and adds a boolean `mask`."""
  n = len(batch["label"])
  padded = {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
            for k, v in batch.items()}
  padded["mask"] = np.arange(batch_size) < n
  return padded
