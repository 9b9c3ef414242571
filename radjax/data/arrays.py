"""Pre-decoded datasets: the input pipeline's cache written once as .npz, trained from without
TensorFlow (a CUDA machine may have none).

    radjax export-arrays --config hello_world --out hello.npz --config.data_dir=DATA   (needs TF)
    radjax train --config hello_world --workdir runs/gpu \
        --config.data_dir=hello.npz --config.augment_on=device                        (no TF)

The file holds, per split, the decoded, resized and quantized images exactly as `files.Pipeline`
caches them (uint8, or uint16 for high-bit-depth sources; one channel when every image is gray),
their labels and source paths, the class names, and the settings that made the pixels
(`PIXEL_SETTINGS`): a run must use the same ones. `ArrayPipeline` serves the batches `Pipeline`
serves, in numpy: the same per-example augmentation matrices from (seed, epoch, index), applied on
the device (`augment_on="device"`). Its shuffle is numpy's (`SeedSequence([seed, epoch])`), not
tf.data's, so a run from arrays is as deterministic and exactly resumable as one from folders,
but its batch order differs from theirs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterator

import numpy as np

from radjax.data import augment as aug, preprocess, sampling
from radjax.errors import UserError

SUFFIX = ".npz"
FORMAT = "radjax-arrays-1"
PIXEL_SETTINGS = preprocess.PIXEL_SETTINGS
SPLITS = ("train", "val", "test")



def is_arrays(path) -> bool:
  return pathlib.Path(path).suffix.lower() == SUFFIX


@dataclasses.dataclass
class Arrays:
  path: pathlib.Path
  class_names: list[str]
  settings: dict
  images: dict[str, np.ndarray]  # split -> (N, S, S, C) uint8 | uint16
  labels: dict[str, np.ndarray]  # split -> (N,) classes, or (N, K) 1/0/-1 for multilabel data
  paths: dict[str, list[str]]
  multilabel: bool = False


def export(config, out, folders) -> dict:
  """Decodes a listed dataset (`datasets.list_every_split`) as the training pipeline caches it
  and writes it to `out` (.npz). Returns {"path", "counts", "bytes"}."""
  from radjax.data import files

  out = pathlib.Path(out)
  if out.suffix != SUFFIX:
    raise UserError(f"--out {out}: expected a {SUFFIX} file")
  if not out.parent.is_dir():
    raise UserError(f"--out {out}: no such folder {out.parent}/")
  pipeline = files.Pipeline(folders, config)
  columns = {"format": np.array(FORMAT), "class_names": np.array(folders.class_names),
             "multilabel": np.array(folders.multilabel),
             "settings": np.array(json.dumps({k: config[k] for k in PIXEL_SETTINGS})),
             "source": np.array(str(folders.root))}
  for split in folders.splits:
    cached = list(pipeline.cached(split))  # (image, label, index), path order
    columns[f"{split}_images"] = np.stack([c[0] for c in cached])
    columns[f"{split}_labels"] = np.array([c[1] for c in cached], np.int32)
    columns[f"{split}_paths"] = np.array([e.path for e in pipeline.examples[split]])
  partial = out.with_name(out.name + ".partial.npz")
  np.savez(partial, **columns)
  partial.rename(out)
  return {"path": str(out), "counts": folders.counts(), "bytes": out.stat().st_size}


def load(path) -> Arrays:
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"{path}: no such arrays file (write one with `radjax export-arrays`)")
  try:
    with np.load(path, allow_pickle=False) as f:
      if "format" not in f or str(f["format"]) != FORMAT:
        raise UserError(f"{path}: not a radjax arrays file (format {FORMAT})")
      splits = [s for s in SPLITS if f"{s}_images" in f]
      return Arrays(path, [str(c) for c in f["class_names"]], json.loads(str(f["settings"])),
                    {s: f[f"{s}_images"] for s in splits}, {s: f[f"{s}_labels"] for s in splits},
                    {s: [str(p) for p in f[f"{s}_paths"]] for s in splits},
                    bool(f["multilabel"]) if "multilabel" in f else False)
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f"{path}: unreadable arrays file ({type(e).__name__}: {e})") from None


class ArrayPipeline:
  """`files.Pipeline`'s batches from `Arrays`, in numpy: cached integer pixels, augmented on the
  device. Needs `config.augment_on = "device"` (host augmentation is TensorFlow's)."""

  def __init__(self, arrays: Arrays, config, splits=("train", "val")):
    for split in splits:
      if split not in arrays.images:
        raise UserError(f"{arrays.path}: has no {split} split (it has {list(arrays.images)})")
    mismatch = preprocess.pixel_setting_mismatch(arrays.settings, config)
    if mismatch:
      key, value = mismatch
      raise UserError(f"--config.{key}={config[key]}: {arrays.path} was decoded with "
                      f"{key}={value}; use that, or export the arrays again")
    if "train" in splits and config.augment_on != "device":
      raise UserError(f"--config.augment_on={config.augment_on}: training from {arrays.path} "
                      "augments on the device; set --config.augment_on=device")
    self.config, self.arrays = config, arrays
    self.class_names = arrays.class_names
    self.multilabel = arrays.multilabel
    if self.multilabel:
      from radjax.data import files

      files.refuse_class_settings(config)
    self.examples = {s: [_Example(p, tuple(int(v) for v in label) if self.multilabel
                                  else int(label))
                         for p, label in zip(arrays.paths[s], arrays.labels[s])]
                     for s in splits}
    self.class_weights = (sampling.class_weights(config, arrays.labels["train"], self.class_names)
                          if "train" in splits and not self.multilabel else None)

  def counts(self) -> dict[str, dict[str, int]]:
    """Images per class; for multilabel data, positive images per label."""
    if self.multilabel:
      return {s: {name: int(np.sum(self.arrays.labels[s][:, i] == 1))
                  for i, name in enumerate(self.class_names)} for s in self.examples}
    return {s: {name: int(np.sum(self.arrays.labels[s] == i))
                for i, name in enumerate(self.class_names)} for s in self.examples}

  def num_examples(self, split: str) -> int:
    return len(self.examples[split])

  def steps_per_epoch(self, batch_size: int) -> int:
    return self.num_examples("train") // batch_size

  def train_batches(self, batch_size: int, first_epoch: int, last_epoch: int | None = None,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, np.ndarray]]:
    """As `files.Pipeline.train_batches` (with `shard`, this process's rows of each batch)."""
    config, images = self.config, self.arrays.images["train"]
    rows = batch_size // shard[1]
    mine = slice(shard[0] * rows, (shard[0] + 1) * rows)
    n, size = len(images), config.image_size
    steps = self.steps_per_epoch(batch_size)
    for epoch in range(first_epoch, (first_epoch if last_epoch is None else last_epoch) + 1):
      if config.sampling == "balanced":
        order = self._balanced_order(epoch, steps * batch_size)
        # A position's transform, not an image's: an image drawn twice is augmented twice anew.
        transforms = aug.epoch_transforms(config.seed, epoch, len(order), config.augment, size,
                                          size)
      else:
        order = np.random.default_rng(np.random.SeedSequence([config.seed, epoch])).permutation(n)
        transforms = aug.epoch_transforms(config.seed, epoch, n, config.augment, size, size)
      for k in range(steps):
        position = np.arange(k * batch_size, (k + 1) * batch_size)[mine]
        index = order[position]
        labels = self.arrays.labels["train"][index]
        batch = {"image": images[index], "label": labels,
                 "transform": transforms[position if config.sampling == "balanced" else index]}
        if self.class_weights is not None:
          batch["weight"] = self.class_weights[labels]
        yield batch

  def _balanced_order(self, epoch: int, count: int) -> np.ndarray:
    """Balanced sampling's `count` example indices of `epoch` (`sampling.balanced_plan`): each
    class' images in its seeded order, repeated as needed."""
    labels = self.arrays.labels["train"]
    choices, class_seeds = sampling.balanced_plan(len(self.class_names), self.config.seed, epoch, count)
    order = np.empty(count, np.int64)
    for c, class_seed in enumerate(class_seeds):
      members = np.flatnonzero(labels == c)
      members = members[np.random.default_rng(class_seed).permutation(len(members))]
      at = np.flatnonzero(choices == c)
      order[at] = members[np.arange(len(at)) % len(members)]
    return order

  def eval_batches(self, split: str, batch_size: int, shard: tuple[int, int] = (0, 1)
                   ) -> Iterator[dict[str, np.ndarray]]:
    """As `files.Pipeline.eval_batches` (with `shard`, this process's contiguous 1/n)."""
    images, labels = self.arrays.images[split], self.arrays.labels[split]
    start, stop = preprocess.process_range(len(images), shard)
    rows = batch_size // shard[1]
    batches = ({"image": images[index], "label": labels[index], "index": index}
               for index in (np.arange(at, min(at + rows, stop)) for at in range(start, stop, rows)))
    empty = {"image": images[:0], "label": labels[:0], "index": np.zeros(0, np.int64)}
    yield from preprocess.padded_batches(batches, len(images), batch_size, shard, empty)

  def recalibration_batches(self, batch_size: int, shard: tuple[int, int] = (0, 1)
                            ) -> Iterator[dict[str, np.ndarray]]:
    """As `files.Pipeline.recalibration_batches` (with `shard`, this process's rows of each)."""
    images, labels = self.arrays.images["train"], self.arrays.labels["train"]
    rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, sampling.RECALIBRATION_STREAM]))
    order = rng.permutation(len(images))
    rows = batch_size // shard[1]
    for k in range(len(images) // batch_size):
      index = order[k * batch_size + shard[0] * rows:k * batch_size + (shard[0] + 1) * rows]
      yield {"image": images[index], "label": labels[index], "index": index}


@dataclasses.dataclass(frozen=True)
class _Example:
  path: str
  label: int | tuple[int, ...]
