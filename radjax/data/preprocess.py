"""From a decoded image to the network's input: the one definition every consumer uses.

    file --decode (crop_borders)--> float [0, 255] --resize--> --quantize--> cached integers
         --(augment)--> to_model_input

The input pipeline caches the quantized image and augments a float copy of it; evaluation,
`predict` and `augment-preview` call `model_input`, which is the same chain without augmentation, so
a file predicted alone sees exactly the pixels validation saw.

Quantization keeps what the source had: 8-bit sources are rounded to whole grey levels (as an
8-bit cache always did), high-bit-depth sources (16-bit PNG, DICOM with more than 8 bits stored) to
1/257 of a grey level, i.e. 16 bits. A dataset with any high-bit-depth image is cached as uint16
(8-bit sources stored exactly, times 257), otherwise as uint8.

TensorFlow is imported lazily (`tensorflow()`), so model code imports without it.
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator

import numpy as np

HIGH_BIT_STEPS = 257  # uint16 levels per 8-bit grey level: 255 * 257 = 65535
# The settings that make a cached image's pixels: a prepared dataset or arrays file records them
# and a run must use the same. Files written before a setting existed were made with its default.
PIXEL_SETTINGS = ("image_size", "resize", "resize_method", "dicom_voi", "crop_borders")
PIXEL_DEFAULTS = {"crop_borders": "off"}


def pixel_setting_mismatch(stored: dict, config) -> tuple[str, object] | None:
  """(name, stored value) of the first pixel setting that differs from `config`'s, or None."""
  for key in PIXEL_SETTINGS:
    value = stored.get(key, PIXEL_DEFAULTS.get(key))
    if value != config[key]:
      return key, value
  return None


@functools.cache
def tensorflow():
  """Imports TensorFlow for the input pipeline, hidden from GPUs (JAX owns them)."""
  import os

  # TF's C++ start-up lines (oneDNN notices, CUDA probing) go to the process' stderr before
  # TF_CPP_MIN_LOG_LEVEL is read by some of its libraries: silence fd 2 during the import.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
      import tensorflow as tf

      tf.config.set_visible_devices([], "GPU")
  finally:
    os.dup2(saved, 2)
    os.close(saved)
  return tf


def decode(path, config) -> np.ndarray:
  """A file -> float32 (H, W, 3) in [0, 255]: read with the run's DICOM VOI, its near-uniform
  margins removed when `config.crop_borders` says so. Every consumer decodes through here, so
  training, evaluation, prediction and explanation see the same pixels."""
  from radjax.data import borders, images

  return borders.crop_borders(images.read_image(path, config.dicom_voi), config.crop_borders)


def keras_nearest_indices(size_in, size_out) -> np.ndarray:
  """Source row (or column) of each output row of Pillow's NEAREST resize, which Keras' `load_img`
  uses: Pillow accumulates the scale in double precision from half a step (`ImagingScaleAffine`),
  and where a product lands within rounding of an integer, only the same sum gives the same pixel."""
  size_in, size_out = int(size_in), int(size_out)
  scale = size_in / size_out
  steps = np.full(size_out, scale)
  steps[0] = scale * 0.5
  return np.minimum(np.add.accumulate(steps).astype(np.int64), size_in - 1)


def resize(image, config):
  """(H, W, C) float image -> (S, S, C): squashed (Keras' flow_from_directory) or padded to square.

  Squash with "nearest" is Pillow's NEAREST (what Keras' `load_img` does), pixel for pixel; the
  other methods are `tf.image.resize` with antialiasing.
  """
  tf = tensorflow()
  size = config.image_size
  if config.resize == "pad":
    return tf.image.resize_with_pad(image, size, size, method=config.resize_method, antialias=True)
  if config.resize_method == "nearest":
    shape = tf.shape(image, out_type=tf.int64)
    # numpy_function's result has no static shape: say it, or every batch downstream has none.
    rows, columns = (tf.ensure_shape(tf.numpy_function(keras_nearest_indices, [shape[axis], size],
                                                       tf.int64, stateful=False), [size])
                     for axis in (0, 1))
    return tf.gather(tf.gather(image, rows, axis=0), columns, axis=1)
  return tf.image.resize(image, [size, size], method=config.resize_method, antialias=True)


def cache_dtype(any_high_bit: bool):
  tf = tensorflow()
  return tf.uint16 if any_high_bit else tf.uint8


def quantize(image, high_bit, dtype):
  """Float [0, 255] -> `dtype` integers: whole grey levels for 8-bit sources, 1/257 for others."""
  tf = tensorflow()
  steps = tf.where(tf.cast(high_bit, tf.bool), float(HIGH_BIT_STEPS), 1.0)
  levels = tf.round(tf.clip_by_value(image, 0.0, 255.0) * steps)
  storage = float(HIGH_BIT_STEPS) if dtype == tf.uint16 else 1.0
  return tf.cast(levels * (storage / steps), dtype)


def dequantize(cached):
  """Cached integers -> float32 in [0, 255]."""
  tf = tensorflow()
  scale = 1.0 / HIGH_BIT_STEPS if cached.dtype == tf.uint16 else 1.0
  return tf.cast(cached, tf.float32) * scale


def to_model_input(image, value_range: str):
  """Float [0, 255] (H, W, 1 or 3) -> the network's range, 3 channels.

  "inception" is [-1, 1], what Keras' ImageNet InceptionV3 weights were trained on; "unit" [0, 1]
  is what the paper's notebook fed them.
  """
  tf = tensorflow()
  image = image / 127.5 - 1.0 if value_range == "inception" else image / 255.0
  shape = tf.concat([tf.shape(image)[:-1], [3]], 0)
  return tf.ensure_shape(tf.broadcast_to(image, shape), image.shape[:-1] + [3])


def cached_image(pixels: np.ndarray, config, high_bit: bool):
  """A decoded image -> what the pipeline caches, as float [0, 255] (S, S, C): what training
  augments and validation feeds (after `to_model_input`)."""
  tf = tensorflow()
  dtype = cache_dtype(high_bit)
  return dequantize(quantize(resize(tf.constant(pixels, tf.float32), config), high_bit, dtype))


def model_input(pixels: np.ndarray, config, high_bit: bool) -> np.ndarray:
  """A decoded image (`images.read_image`) -> exactly what validation feeds the network."""
  if config.resize == "squash" and config.resize_method == "nearest":
    return nearest_model_input(pixels, config, high_bit)
  return to_model_input(cached_image(pixels, config, high_bit), config.value_range).numpy()


def film_input(pixels: np.ndarray, config, high_bit: bool) -> np.ndarray:
  """A decoded film not yet cropped (`images.read_image`, a perturbed copy, an upload) -> the
  network's input: the run's border cropping, then `model_input`."""
  from radjax.data import borders

  return model_input(borders.crop_borders(pixels, config.crop_borders), config, high_bit)


def nearest_model_input(pixels: np.ndarray, config, high_bit: bool) -> np.ndarray:
  """`model_input` of a squashed nearest-neighbour resize (the paper's config) in NumPy, bit for
  bit the TensorFlow chain's (a gather, then the same float32 operations in the same order;
  tested): `radjax predict` of such a run then never imports TensorFlow, ~3.6 s of its start-up."""
  size = config.image_size
  pixels = np.asarray(pixels, np.float32)
  rows, columns = (keras_nearest_indices(pixels.shape[axis], size) for axis in (0, 1))
  image = pixels[rows][:, columns]
  steps = np.float32(HIGH_BIT_STEPS if high_bit else 1.0)
  levels = np.round(np.clip(image, np.float32(0), np.float32(255)) * steps)
  storage = np.float32(HIGH_BIT_STEPS if high_bit else 1.0)
  cached = (levels * (storage / steps)).astype(np.uint16 if high_bit else np.uint8)
  image = cached.astype(np.float32) * np.float32(1.0 / HIGH_BIT_STEPS if high_bit else 1.0)
  image = (image / np.float32(127.5) - np.float32(1.0) if config.value_range == "inception"
           else image / np.float32(255.0))
  return np.ascontiguousarray(np.broadcast_to(image, image.shape[:-1] + (3,)))


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads every array to `batch_size` rows (zeros) and adds a boolean `mask` of the real rows, so
  every batch has one compiled shape and every example counts exactly once."""
  n = len(next(iter(batch.values())))
  padded = {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
            for k, v in batch.items()}
  padded["mask"] = np.arange(batch_size) < n
  return padded


def process_range(count: int, shard: tuple[int, int]) -> tuple[int, int]:
  """Process i of n's contiguous share [start, stop) of `count` examples in path order:
  ceil(count / n) each, the last process fewer (or none)."""
  index, processes = shard
  share = -(-count // processes)
  return min(count, index * share), min(count, (index + 1) * share)


def padded_batches(batches: Iterable[dict], count: int, batch_size: int, shard: tuple[int, int],
                   empty: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
  """Evaluation batches of process i of n: its `process_range` of `count` examples in `batches` of
  b = batch_size / n rows, each padded (`pad_batch`), then wholly padded ones, so that every
  process yields ceil(ceil(count / n) / b) batches: the global batch k is every process's batch k,
  one compiled shape. `empty`: one zero-row array per key (the shape of a wholly padded batch)."""
  rows = batch_size // shard[1]
  total = -(-(-(-count // shard[1])) // rows)
  done = 0
  for batch in batches:
    done += 1
    yield pad_batch(batch, rows)
  for _ in range(total - done):
    yield pad_batch(empty, rows)
