"""Datasets larger than memory: decoded once into a TFDS dataset on disk, then streamed.

    radjax prepare --config hello_world DATA OUT     (DATA: class folders or a CSV manifest)
    radjax train --config hello_world --workdir runs/x --config.data_dir=OUT

`prepare` decodes, resizes and quantizes every split exactly as `data.Pipeline` caches it (uint8,
or uint16 for high-bit-depth sources; one channel when every image is gray) and stores it with
tensorflow-datasets' own writer (`tfds.dataset_builders.store_as_tfds_dataset`: sharded records,
`dataset_info.json`, PNG-encoded images), in path order, with the label (a class, or a 1/0/-1
vector for multilabel data), the example's index, its source path and its patient id (a manifest's
patient_id column, else the DICOM Patient ID, else "") as features. `OUT/radjax.json`
records the class names, the pixel settings (a run must use the same ones) and each split's paths
and labels, so counts and class weights need no pass over the images.

`PreparedPipeline` is `data.Pipeline` reading that dataset (`tfds.builder_from_directory`): it
keeps the decoded images in memory when they fit `config.cache_mb`, as folders do, and otherwise
streams them from disk every epoch with a shuffle buffer of `config.shuffle_buffer` examples, and
says so. Every epoch's order and transforms stay a function of (seed, epoch); a streamed epoch's
order differs from a cached one's (the buffer mixes less than the whole set).

Several processes: a cached dataset is trained exactly as one process trains it (`data.Pipeline`).
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

from radjax import data, dicom
from radjax.errors import UserError

NAME = "radjax_prepared"
VERSION = "1.1.0"  # 1.1.0: patient_id feature
INDEX = "radjax.json"
FORMAT = "radjax-prepared-2"  # 2: patient ids
PIXEL_SETTINGS = ("image_size", "resize", "resize_method", "dicom_voi")


def is_prepared(path) -> bool:
  return (pathlib.Path(path) / INDEX).is_file()


def prepare(config, folders: data.Folders, out, progress: bool = True) -> dict:
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
  channels, high_bit = data.cache_layout(everything)
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
  bar = tqdm(total=total, desc="prepare", unit="image", disable=not progress)

  def split_examples(split):
    # One decoding pipeline over every split's examples would mix their channel counts: decode
    # each split with the channels and dtype of the whole dataset.
    listed = examples[split]
    decoded = data.decoded_dataset(listed, config, channels=channels, high_bit=high_bit)
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
           # A split of gray images only is cached with one channel, as `data.Pipeline` does.
           "split_channels": {split: data.cache_layout(listed)[0]
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


class PreparedPipeline(data.Pipeline):
  """`data.Pipeline` over a prepared dataset: cached in memory when it fits `config.cache_mb`,
  else streamed from disk (see the module docstring)."""

  def __init__(self, path, config, splits=("train", "val")):
    import tensorflow_datasets as tfds

    self.path = pathlib.Path(path)
    index = json.loads((self.path / INDEX).read_text())
    if index.get("format") == "radjax-prepared-1":
      raise UserError(f"{self.path}: written by an older `radjax prepare` (no patient ids); "
                      "prepare it again")
    if index.get("format") != FORMAT:
      raise UserError(f"{self.path}: not a dataset written by `radjax prepare` ({INDEX} format "
                      f"{index.get('format')!r})")
    for key in PIXEL_SETTINGS:
      if index["settings"][key] != config[key]:
        raise UserError(f"--config.{key}={config[key]}: {self.path} was prepared with "
                        f"{key}={index['settings'][key]}; use that, or prepare it again")
    missing = [s for s in splits if s not in index["splits"]]
    if missing:
      raise UserError(f"{self.path}: has no {missing[0]} split (it has "
                      f"{list(index['splits'])})")
    self.builder = tfds.builder_from_directory(str(self.path / NAME / VERSION))
    multilabel = index["multilabel"]
    listed = {s: [data.Example(p, tuple(label) if multilabel else int(label), patient_id=patient)
                  for p, label, patient in zip(index["splits"][s]["paths"],
                                               index["splits"][s]["labels"],
                                               index["splits"][s]["patient_ids"])]
              for s in splits}
    folders = data.Folders(self.path, index["class_names"], listed, [], multilabel)
    self.split_channels = index["split_channels"]
    self.itemsize = np.dtype(index["dtype"]).itemsize * index["channels"]
    decoded = sum(len(v) for v in listed.values()) * config.image_size ** 2 * self.itemsize
    self.streaming = decoded > config.cache_mb * 2**20
    if self.streaming:
      print(f"Data: {self.path} streams from disk ({decoded / 2**20:,.0f} MiB decoded exceeds "
            f"--config.cache_mb={config.cache_mb}); shuffle buffer {config.shuffle_buffer} "
            "images")
    super().__init__(folders, config)

  def _decoded(self, examples):
    """The split whose examples these are, read from disk: (image, label, index) in path order."""
    split = next(s for s, listed in self.examples.items() if listed is examples)
    ds = self._read(split, split)
    return ds if self.streaming else ds.cache()

  def _read(self, split: str, selection: str):
    """(image, label, index) of the TFDS split `selection` (a slice of `split`), from disk."""
    import tensorflow as tf

    channels = self.split_channels[split]
    ds = self.builder.as_dataset(split=selection, shuffle_files=False)
    return ds.map(lambda e: (e["image"][..., :channels], tf.cast(e["label"], tf.int32),
                             e["index"]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def _examples_of(self, split: str, start: int, stop: int):
    """Streamed: only the files that hold examples start..stop-1 are read (a TFDS slice)."""
    if not self.streaming or (start, stop) == (0, self.num_examples(split)):
      return super()._examples_of(split, start, stop)
    if start == stop:
      return self._cached[split].take(0)
    return self._read(split, f"{split}[{start}:{stop}]")

  def shuffle_buffer(self, split: str) -> int:
    if not self.streaming:
      return self.num_examples(split)
    return min(self.num_examples(split), self.config.shuffle_buffer)
