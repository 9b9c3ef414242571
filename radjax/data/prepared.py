"""Datasets larger than memory: decoded once into a TFDS dataset on disk, then streamed.

    radjax prepare --config hello_world DATA OUT     (DATA: class folders or a CSV manifest)
    radjax train --config hello_world --workdir runs/x --config.data_dir=OUT

`prepare` decodes, resizes and quantizes every split exactly as `files.Pipeline` caches it (uint8,
or uint16 for high-bit-depth sources; one channel when every image is gray) and stores it with
tensorflow-datasets' own writer (`tfds.dataset_builders.store_as_tfds_dataset`: sharded records,
`dataset_info.json`, PNG-encoded images), in path order, with the label (a class, or a 1/0/-1
vector for multilabel data), the example's index, its source path and its patient id (a manifest's
patient_id column, else the DICOM Patient ID, else "") as features. `OUT/radjax.json`
records the class names, the pixel settings (a run must use the same ones) and each split's paths
and labels, so counts and class weights need no pass over the images.

`PreparedPipeline` is `files.Pipeline` reading that dataset (`tfds.builder_from_directory`): it
keeps the decoded images in memory when they fit `config.cache_mb`, as folders do, and otherwise
streams them from disk every epoch with a shuffle buffer of `config.shuffle_buffer` examples, and
says so. Every epoch's order and transforms stay a function of (seed, epoch); a streamed epoch's
order differs from a cached one's (the buffer mixes less than the whole set).

Several processes: a cached dataset is trained exactly as one process trains it (`files.Pipeline`).
A streamed one gives process i of n its own contiguous 1/n of every split (a TFDS slice, so only
the files holding it are read), shuffled with its own buffer, and each global batch is every
process's next batch_size / n rows: the n processes together see every image once per epoch, in
an order that depends on n. Balanced sampling still has every process draw the global plan from
the whole stream and keep its rows.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np

from radjax.data import dicom, duplicates, files, listing, preprocess
from radjax.data.preprocess import HIGH_BIT_STEPS
from radjax.errors import UserError

NAME = "radjax_prepared"
VERSION = "1.1.0"  # 1.1.0: patient_id feature
INDEX = "radjax.json"
FORMAT = "radjax-prepared-2"  # 2: patient ids
VIEW_FORMAT = "radjax-prepared-view-1"  # `write_view`: some examples of a prepared dataset
PIXEL_SETTINGS = preprocess.PIXEL_SETTINGS
# zlib level of the stored PNGs. Measured on 299x299 gray films: level 1 encodes in 1.8 ms, the
# default (6) in 13.1 ms, for files 16% larger (37 vs 32 KiB); decoding takes 1.0 ms either way.
PNG_COMPRESSION = 1


def is_prepared(path) -> bool:
  return (pathlib.Path(path) / INDEX).is_file()


def prepare(config, folders: listing.Folders, out, progress: bool = True) -> dict:
  """Writes `folders` (every listed split) to `out` as a TFDS dataset plus `radjax.json`.
  Returns {"path", "counts", "bytes", "images"}."""
  import tensorflow_datasets as tfds
  from tqdm import tqdm

  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise UserError(f"{out}: exists and is not an empty folder; prepare into a new one")
  if not out.parent.is_dir():
    raise UserError(f"{out}: no such folder {out.parent}/")
  examples = {split: sorted(e, key=lambda x: x.path) for split, e in folders.splits.items()}
  everything = [e for split in examples.values() for e in split]
  patients = {e.path: e.patient_id or dicom.patient_id(e.path) for e in everything}
  channels, high_bit = files.cache_layout(everything)
  dtype = np.uint16 if high_bit else np.uint8
  size = config.image_size
  k = len(folders.class_names)
  label = (tfds.features.Tensor(shape=(k,), dtype=np.int8) if folders.multilabel
           else tfds.features.ClassLabel(names=folders.class_names))
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(size, size, channels), dtype=dtype,
                                   encoding_format="png"),
      "label": label, "index": np.int64, "path": tfds.features.Text(),
      "patient_id": tfds.features.Text()})
  total = len(everything)
  bar = tqdm(total=total, desc="prepare", unit="image", disable=None if progress else True)

  def split_examples(split):
    import tensorflow as tf

    # One decoding pipeline over every split's examples would mix their channel counts: decode
    # each split with the channels and dtype of the whole dataset. PNG-encoded there, in
    # parallel: TFDS would encode each image in this generator's one thread (80% of the time).
    listed = examples[split]
    decoded = files.decoded_dataset(listed, config, channels=channels, high_bit=high_bit).map(
        lambda image, label, index: (tf.io.encode_png(image, compression=PNG_COMPRESSION), label,
                                     index),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for image, _, index in decoded.as_numpy_iterator():
      e = listed[int(index)]
      bar.update(1)
      yield int(index), {"image": image, "label": np.asarray(e.label, np.int8)
                         if folders.multilabel else int(e.label),
                         "index": int(index), "path": e.path, "patient_id": patients[e.path]}

  tfds.dataset_builders.store_as_tfds_dataset(
      name=NAME, version=VERSION, features=features, data_dir=out, disable_shuffling=True,
      split_datasets={split: split_examples(split) for split in examples},
      description="Written by `radjax prepare`: see radjax.json beside it.")
  bar.close()
  downloads = out / "downloads"  # TFDS' empty download folder: nothing was downloaded
  if downloads.is_dir() and not any(f.is_file() for f in downloads.rglob("*")):
    shutil.rmtree(downloads)
  index = {"format": FORMAT, "class_names": list(folders.class_names),
           "multilabel": folders.multilabel, "channels": channels, "dtype": np.dtype(dtype).name,
           # A split of gray images only is cached with one channel, as `files.Pipeline` does.
           "split_channels": {split: files.cache_layout(listed)[0]
                              for split, listed in examples.items()},
           "settings": {key: config[key] for key in PIXEL_SETTINGS},
           "splits": {split: {"paths": [e.path for e in listed],
                              "labels": [e.label for e in listed],
                              "patient_ids": [patients[e.path] for e in listed]}
                      for split, listed in examples.items()}}
  (out / INDEX).write_text(json.dumps(index))
  nbytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  return {"path": str(out), "counts": folders.counts(), "bytes": nbytes, "images": total,
          "decoded_bytes": total * size * size * channels * np.dtype(dtype).itemsize}


def read_index(path) -> dict:
  """`path`/radjax.json of a prepared dataset; refuses anything else in one line."""
  path = pathlib.Path(path)
  index = json.loads((path / INDEX).read_text())
  if index.get("format") == "radjax-prepared-1":
    raise UserError(f"{path}: written by an older `radjax prepare` (no patient ids); "
                    "prepare it again")
  if index.get("format") not in (FORMAT, VIEW_FORMAT):
    raise UserError(f"{path}: not a dataset written by `radjax prepare` ({INDEX} format "
                    f"{index.get('format')!r})")
  return index


def write_view(prepared_dir, out, splits: dict[str, list[tuple[str, int]]]) -> None:
  """A view of a prepared dataset in `out` (a folder `train` reads like the dataset itself): each
  of its splits is the listed (split, index) examples of the dataset, e.g. a cross-validation
  fold's training and held-out images. Its examples are in the dataset's order (its splits in
  their order, each in path order), the order a view is read in."""
  prepared_dir = pathlib.Path(prepared_dir).resolve()
  order = {name: k for k, name in enumerate(read_index(prepared_dir)["splits"])}
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / INDEX).write_text(json.dumps({
      "format": VIEW_FORMAT, "prepared": str(prepared_dir),
      "splits": {name: sorted(([s, int(i)] for s, i in listed), key=lambda e: (order[e[0]], e[1]))
                 for name, listed in splits.items()}}))


def locations(prepared_dir) -> dict[str, tuple[str, int]]:
  """{source path: (split, index)} of every example of a prepared dataset."""
  index = read_index(prepared_dir)
  return {p: (split, i) for split, listed in index["splits"].items()
          for i, p in enumerate(listed["paths"])}


def identities(prepared_dir, splits) -> dict[tuple[str, int], tuple[str, int]]:
  """{(split, index): (SHA-256 of the prepared pixels, their perceptual hash)} of `splits`: what
  `radjax cv` groups duplicates by without the source files (one pass over the dataset)."""
  import hashlib

  import tensorflow_datasets as tfds
  from tqdm import tqdm

  builder = tfds.builder_from_directory(str(pathlib.Path(prepared_dir) / NAME / VERSION))
  found = {}
  for split in splits:
    ds = builder.as_dataset(split=split, shuffle_files=False)
    for e in tqdm(tfds.as_numpy(ds), total=builder.info.splits[split].num_examples,
                  desc=f"hashing the prepared {split} images", unit="image", leave=False,
                  disable=None):
      image = e["image"]
      pixels = image / HIGH_BIT_STEPS if image.dtype == np.uint16 else image  # [0, 255]
      pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels  # PIL: (H, W) or (H, W, 3)
      found[(split, int(e["index"]))] = (hashlib.sha256(image.tobytes()).hexdigest(),
                                         duplicates.perceptual_hash(np.asarray(pixels, np.float32)))
  return found


class PreparedPipeline(files.Pipeline):
  """`files.Pipeline` over a prepared dataset (or a view of one: `write_view`): cached in memory
  when it fits `config.cache_mb`, else streamed from disk (see the module docstring)."""

  def __init__(self, path, config, splits=("train", "val")):
    import tensorflow_datasets as tfds

    self.path = pathlib.Path(path)
    index = read_index(self.path)
    view = None  # {split: [(dataset split, index), ...]} for a view
    if index["format"] == VIEW_FORMAT:
      view = {name: [(s, int(i)) for s, i in listed] for name, listed in index["splits"].items()}
      source = pathlib.Path(index["prepared"])
      if not is_prepared(source):
        raise UserError(f"{self.path}: a view of the prepared dataset {source}, which is gone")
      index = read_index(source)
    else:
      source = self.path
    mismatch = preprocess.pixel_setting_mismatch(index["settings"], config)
    if mismatch:
      key, value = mismatch
      raise UserError(f"--config.{key}={config[key]}: {source} was prepared with "
                      f"{key}={value}; use that, or prepare it again")
    present = view if view is not None else index["splits"]
    missing = [s for s in splits if s not in present]
    if missing:
      raise UserError(f"{self.path}: has no {missing[0]} split (it has {list(present)})")
    self.builder = tfds.builder_from_directory(str(source / NAME / VERSION))
    multilabel = index["multilabel"]

    def example(split, i):
      listed = index["splits"][split]
      label = listed["labels"][i]
      return listing.Example(listed["paths"][i], tuple(label) if multilabel else int(label),
                          patient_id=listed["patient_ids"][i])

    self.is_view = view is not None
    # Each split's examples as (dataset split, index), in the order they are read.
    members = view if view is not None else {
        s: [(s, i) for i in range(len(index["splits"][s]["paths"]))] for s in splits}
    listed = {s: [example(*m) for m in members[s]] for s in splits}
    # A split of gray images only is cached with one channel; a view's split takes its sources'.
    self.split_channels = {s: max(index["split_channels"][source_split]
                                  for source_split, _ in members[s]) if members[s] else 1
                           for s in splits}
    self.members = {s: members[s] for s in splits}
    folders = listing.Folders(self.path, index["class_names"], listed, [], multilabel)
    self.itemsize = np.dtype(index["dtype"]).itemsize * index["channels"]
    decoded = sum(len(v) for v in listed.values()) * config.image_size ** 2 * self.itemsize
    self.streaming = decoded > config.cache_mb * 2**20
    if self.streaming:
      print(f"Data: {self.path} streams from disk ({decoded / 2**20:,.0f} MiB decoded exceeds "
            f"--config.cache_mb={config.cache_mb}); shuffle buffer {config.shuffle_buffer} "
            "images")
    super().__init__(folders, config)

  def _ordered(self, examples):
    """As listed: path order in a prepared split, the dataset's order in a view."""
    return list(examples)

  def _decoded(self, split: str):
    """The split read from disk: (image, label, index) in the order of its examples."""
    ds = self._read(split)
    return ds if self.streaming else ds.cache()

  def _read(self, split: str, start: int = 0, stop: int | None = None):
    """(image, label, index) of examples start..stop-1 of `split`, from disk: a TFDS slice of a
    prepared split (only the files holding it are read); for a view, each dataset split it draws
    on, its examples picked out and numbered in the view's order."""
    import tensorflow as tf

    channels = self.split_channels[split]

    def decoded(selection):
      return self.builder.as_dataset(split=selection, shuffle_files=False).map(
          lambda e: (e["image"][..., :channels], tf.cast(e["label"], tf.int32), e["index"]),
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    if not self.is_view:
      stop = self.num_examples(split) if stop is None else stop
      whole = (start, stop) == (0, self.num_examples(split))
      return decoded(split if whole else f"{split}[{start}:{stop}]")
    parts = []
    for source in dict.fromkeys(s for s, _ in self.members[split]):  # in the view's order
      keys = [(i, position) for position, (s, i) in enumerate(self.members[split]) if s == source]
      table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
          tf.constant([k for k, _ in keys], tf.int64), tf.constant([p for _, p in keys], tf.int64)),
          default_value=-1)
      parts.append(decoded(source).map(lambda image, label, i, t=table: (image, label, t.lookup(i)))
                   .filter(lambda image, label, position: position >= 0))
    ds = parts[0]
    for part in parts[1:]:
      ds = ds.concatenate(part)
    return ds if (start, stop) == (0, None) else ds.skip(start).take(stop - start)

  def _examples_of(self, split: str, start: int, stop: int):
    """Streamed: only the files that hold examples start..stop-1 are read (a TFDS slice; a view
    reads its dataset splits whole)."""
    if not self.streaming or (start, stop) == (0, self.num_examples(split)):
      return super()._examples_of(split, start, stop)
    if start == stop:
      return self._cached[split].take(0)
    return self._read(split, start, stop)

  def shuffle_buffer(self, split: str) -> int:
    if not self.streaming:
      return self.num_examples(split)
    return min(self.num_examples(split), self.config.shuffle_buffer)
