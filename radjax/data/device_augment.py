"""The training augmentation inside the jitted step (`config.augment_on = "device"`), in JAX.

The host computes the same per-example matrices as the tf.data path (`augment.epoch_transforms`,
from (seed, epoch, index)) and sends them with the cached uint8/uint16 images; this module does
what TensorFlow's `ImageProjectiveTransformV3` does with them, so the host only decodes, caches,
shuffles and batches. Semantics, read from TensorFlow's `image_ops.h`:
- output pixel (x, y) samples the input at (a0 x + a1 y + a2, a3 x + a4 y + a5) / (c0 x + c1 y + 1);
- fill "nearest" clamps that coordinate to [0, size - 1]; "reflect" mirrors it (d c b a | a b c d |
  d c b a), then clamps;
- bilinear weighs the four neighbours floor/floor+1; a neighbour outside the image reads 0 (it
  only occurs with weight 0 after the clamp); nearest rounds half away from zero.

Then `to_model_input`: the cached integers back to [0, 255], the model's value range, 3 channels.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from radjax.data import acquisition
from radjax.data.augment import AFFINE_WIDTH
from radjax.data.preprocess import HIGH_BIT_STEPS


def _reflect(coord, size: int):
  """TensorFlow's REFLECT coordinate map for one axis of length `size` (float coordinates)."""
  if size <= 1:
    return jnp.zeros_like(coord)
  period = 2.0 * size
  # Below 0: fold into (-2 size, 0], then mirror.
  low = period * jnp.trunc(-coord / period) + coord
  low = jnp.where(low < -size, low + period, -low - 1.0)
  # Above size - 1: fold into [0, 2 size), then mirror.
  high = coord - period * jnp.trunc(coord / period)
  high = jnp.where(high >= size, period - high - 1.0, high)
  return jnp.where(coord < 0, low, jnp.where(coord > size - 1, high, coord))


def _map_coordinate(coord, size: int, fill_mode: str):
  if fill_mode == "reflect":
    coord = _reflect(coord, size)
  return jnp.clip(coord, 0.0, size - 1.0)


def _resample_one(image, transform, fill_mode: str, interpolation: str):
  """One (H, W, C) float image and its 8-vector transform -> the transformed (H, W, C) image."""
  height, width = image.shape[:2]
  y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                      jnp.arange(width, dtype=jnp.float32), indexing="ij")
  a0, a1, a2, a3, a4, a5, c0, c1 = (transform[i] for i in range(8))
  projection = c0 * x + c1 * y + 1.0
  # radjax' transforms are affine (c0 = c1 = 0); a zero projection reads the fill value 0.
  safe = jnp.where(projection == 0, 1.0, projection)
  in_x = _map_coordinate((a0 * x + a1 * y + a2) / safe, width, fill_mode)
  in_y = _map_coordinate((a3 * x + a4 * y + a5) / safe, height, fill_mode)

  def read(row, col):  # the pixel, or 0 outside the image
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    value = image[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
    return jnp.where(inside[..., None], value, 0.0)

  if interpolation == "nearest":
    # std::round: half away from zero (coordinates are >= 0 here, so floor(x + 0.5)).
    out = read(jnp.floor(in_y + 0.5).astype(jnp.int32), jnp.floor(in_x + 0.5).astype(jnp.int32))
  else:
    y0, x0 = jnp.floor(in_y), jnp.floor(in_x)
    wy, wx = (in_y - y0)[..., None], (in_x - x0)[..., None]
    r0, c0_ = y0.astype(jnp.int32), x0.astype(jnp.int32)
    top = (1.0 - wx) * read(r0, c0_) + wx * read(r0, c0_ + 1)
    bottom = (1.0 - wx) * read(r0 + 1, c0_) + wx * read(r0 + 1, c0_ + 1)
    out = (1.0 - wy) * top + wy * bottom
  return jnp.where((projection == 0)[..., None], 0.0, out)


def apply_transforms(images, transforms, fill_mode: str = "nearest",
                     interpolation: str = "bilinear"):
  """(B, H, W, C) float images, (B, 8) transforms -> resampled images (as augment.apply_transforms)."""
  return jax.vmap(lambda i, t: _resample_one(i, t, fill_mode, interpolation))(
      images.astype(jnp.float32), transforms.astype(jnp.float32))


def dequantize(cached):
  """Cached uint8 / uint16 integers -> float32 [0, 255] (as preprocess.dequantize)."""
  scale = 1.0 / HIGH_BIT_STEPS if cached.dtype == jnp.uint16 else 1.0
  return cached.astype(jnp.float32) * scale


def to_model_input(image, value_range: str):
  """Float [0, 255] (..., 1 or 3) -> the network's range, 3 channels (as preprocess.to_model_input)."""
  image = image / 127.5 - 1.0 if value_range == "inception" else image / 255.0
  return jnp.broadcast_to(image, image.shape[:-1] + (3,))


def model_input(batch, *, augment, value_range: str):
  """The network's input from a batch. Integer images are cached pixels (`augment_on="device"`):
  dequantized, augmented when the batch carries transforms (training) and `augment.enabled`, and
  brought to the model's range. Float images are model input already (host augmentation,
  predict, explain). The dtype is static, so each compiled step takes one path."""
  image = batch["image"]
  if not jnp.issubdtype(image.dtype, jnp.integer):
    return image
  image = dequantize(image)
  if "transform" in batch and augment.enabled:
    transform = batch["transform"]
    image = apply_transforms(image, transform[:, :AFFINE_WIDTH], augment.fill_mode,
                             augment.interpolation)
    if acquisition.active(augment):  # the same NumPy-or-JAX code as the host path
      image = jax.vmap(lambda i, p: acquisition.apply(jnp, i, p, augment))(
          image, transform[:, AFFINE_WIDTH:])
  return to_model_input(image, value_range)
