"""The input pipeline over image files (class folders or a CSV manifest, `radjax.data.listing`).

The pipeline follows flax' examples: decode + resize + quantize (radjax.data.preprocess) -> cache
-> shuffle (per-epoch seed) -> map(augment) -> batch -> prefetch. TensorFlow runs on the CPU only
and is imported lazily, so the model and the train step import without it. The other two
pipelines, over decoded arrays and prepared TFDS datasets, share its helpers and its interface.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from radjax.data import augment as aug, preprocess, sampling
from radjax.data.listing import Example, Folders
from radjax.data.preprocess import tensorflow
from radjax.errors import UserError

log = logging.getLogger("radjax")


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
    return preprocess.decode(path.decode(), config)[..., :channels]

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
    self.class_weights = None if folders.multilabel else (sampling.class_weights(
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
      transforms = tf.ensure_shape(transforms, [n, aug.transform_width(config.augment)])
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
      choices, class_seeds = sampling.balanced_plan(num_classes, config.seed, int(epoch), positions)
      transforms = aug.epoch_transforms(config.seed, int(epoch), positions, config.augment,
                                        config.image_size, config.image_size)
      return choices, class_seeds, transforms

    def balanced_examples(epoch):
      choices, class_seeds, transforms = tf.numpy_function(
          balanced_plan_of, [epoch], (tf.int64, tf.int64, tf.float32), stateful=False)
      choices = tf.ensure_shape(choices, [positions])
      class_seeds = tf.ensure_shape(class_seeds, [num_classes])
      transforms = tf.ensure_shape(transforms, [positions, aug.transform_width(config.augment)])
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
      if config.augment_on == "device":  # the jitted step augments (radjax.data.device_augment)
        example = {"image": image, "label": label, "transform": transform}
      else:
        image = preprocess.dequantize(image)
        if config.augment.enabled:
          image = aug.augment_row(image, transform, config.augment)
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
    seed = int(np.random.SeedSequence([config.seed, sampling.RECALIBRATION_STREAM]).generate_state(1)[0])
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
