"""Keras `ImageDataGenerator` augmentation as one affine resampling per image, in TensorFlow.

Semantics follow `tf_keras/src/preprocessing/image.py` (`get_random_transform`,
`apply_affine_transform`, `transform_matrix_offset_center`):
- rotation_range: degrees, uniform in [-r, r];
- width/height_shift_range: fractions of the image size when < 1, pixels otherwise;
- shear_range: Keras' unit is *degrees* (it calls `np.deg2rad(shear)`), so the paper's 0.2 is a
  shear of at most 0.2 degrees;
- zoom_range z: independent x and y zoom factors uniform in [1 - z, 1 + z] (values > 1 zoom out);
- horizontal_flip: mirror with probability 1/2, after the affine transform;
- fill_mode "nearest", bilinear interpolation (Keras' `interpolation_order=1`).
Keras composes rotation @ shift @ shear @ zoom about the image centre and maps *output* pixels to
*input* coordinates, like `ImageProjectiveTransformV3`. radjax also folds the flip into that matrix,
so each image is resampled exactly once. Keras' own code swaps the roles of height and width in the
shift and the centre (harmless for the square images it and radjax augment: the ranges are equal
and the images are resized to `image_size` first); radjax shifts along the axis each range names.

Randomness is stateless: an epoch's draws are a table whose row i depends only on
(seed, epoch, example index i), so the same seed gives the same images in any order, after a
resume, eagerly or inside tf.data. The table and the matrices are computed on the host with numpy,
vectorised over the epoch; the pipeline then does one gather and one resampling per image (on 2
cores, per-image TF ops for the matrix cost as much as the resampling itself).
"""

from __future__ import annotations

import math

import numpy as np

# Keras' "constant" and "wrap" differ from TensorFlow's at the border; these two match it exactly.
FILL_MODES = {"nearest": "NEAREST", "reflect": "REFLECT"}
INTERPOLATIONS = {"bilinear": "BILINEAR", "nearest": "NEAREST"}
NUM_DRAWS = 7  # rotation, shift x, shift y, shear, zoom x, zoom y, flip


def _range(value, size):
  """Keras: a shift range below 1 is a fraction of the size, otherwise a number of pixels."""
  return value * size if value < 1 else float(value)


def epoch_uniforms(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """[num_examples, 7] uniform draws in [-1, 1); row i is a function of (seed, epoch, i) only."""
  rng = np.random.default_rng([seed, epoch])
  return rng.uniform(-1.0, 1.0, (num_examples, NUM_DRAWS)).astype(np.float32)


def params_from_uniforms(u, config, height: int, width: int) -> dict[str, np.ndarray]:
  """Keras' transform parameters from draws `u` of shape [..., 7] (one row per image)."""
  u = np.asarray(u, np.float64)
  z = config.zoom_range
  return {
      "theta": u[..., 0] * config.rotation_range * (math.pi / 180),
      "tx": u[..., 1] * _range(config.width_shift_range, width),
      "ty": u[..., 2] * _range(config.height_shift_range, height),
      "shear": u[..., 3] * config.shear_range * (math.pi / 180),
      "zx": 1.0 + u[..., 4] * z,
      "zy": 1.0 + u[..., 5] * z,
      "flip": np.logical_and(u[..., 6] < 0.0, config.horizontal_flip),
  }


def affine_matrix(params, height: int, width: int) -> np.ndarray:
  """[..., 3, 3] matrices mapping output (x=column, y=row, 1) to input coordinates.

  centre @ rotation @ shift @ shear @ zoom @ centre^-1 @ flip (Keras' order; the flip of the
  output comes last in Keras, so first in this output-to-input map), in closed form.
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  cos, sin = np.cos(p["theta"]), np.sin(p["theta"])
  sh_cos, sh_sin = np.cos(p["shear"]), np.sin(p["shear"])
  # Linear part L = rotation @ shear @ zoom; translation of rotation @ shift: R t.
  l00, l01 = cos * p["zx"], (-cos * sh_sin - sin * sh_cos) * p["zy"]
  l10, l11 = sin * p["zx"], (-sin * sh_sin + cos * sh_cos) * p["zy"]
  t0 = cos * p["tx"] - sin * p["ty"]
  t1 = sin * p["tx"] + cos * p["ty"]
  # About the centre c: x_in = L (x - c) + R t + c.
  cx, cy = width / 2 - 0.5, height / 2 - 0.5
  b0 = t0 + cx - (l00 * cx + l01 * cy)
  b1 = t1 + cy - (l10 * cx + l11 * cy)
  # Horizontal flip of the output: x -> (width - 1) - x.
  flip = p["flip"].astype(bool)
  offset = np.where(flip, width - 1.0, 0.0)
  b0, b1 = b0 + l00 * offset, b1 + l10 * offset
  sign = np.where(flip, -1.0, 1.0)
  l00, l10 = l00 * sign, l10 * sign
  zero, one = np.zeros_like(l00), np.ones_like(l00)
  rows = np.stack([l00, l01, b0, l10, l11, b1, zero, zero, one], axis=-1)
  return rows.reshape(rows.shape[:-1] + (3, 3))


def to_transforms(matrices) -> np.ndarray:
  """[..., 3, 3] affine matrices -> the [..., 8] rows `ImageProjectiveTransformV3` takes."""
  flat = np.asarray(matrices).reshape(np.shape(matrices)[:-2] + (9,))
  return np.concatenate([flat[..., :6], np.zeros_like(flat[..., :2])], axis=-1).astype(np.float32)


AFFINE_WIDTH = 8  # the `ImageProjectiveTransformV3` row; acquisition draws follow it


def transform_width(config) -> int:
  """Numbers per example in a transform row: the affine 8, and `acquisition.WIDTH` more when
  acquisition augmentation is on."""
  from radjax.data import acquisition

  return AFFINE_WIDTH + (acquisition.WIDTH if acquisition.active(config) else 0)


def epoch_transforms(seed: int, epoch: int, num_examples: int, config, height: int,
                     width: int) -> np.ndarray:
  """[num_examples, transform_width(config)] transforms of one epoch, row i for example i: the
  affine row, then the acquisition augmentation's draws when it is on (`acquisition.py`)."""
  from radjax.data import acquisition

  params = params_from_uniforms(epoch_uniforms(seed, epoch, num_examples), config, height, width)
  affine = to_transforms(affine_matrix(params, height, width))
  if not acquisition.active(config):
    return affine
  return np.concatenate([affine, acquisition.epoch_params(seed, epoch, num_examples, config,
                                                          height)], axis=1)


def apply_transforms(images, transforms, fill_mode: str = "nearest",
                     interpolation: str = "bilinear"):
  """Resamples (B, H, W, C) float images with [B, 8] transforms (TensorFlow op)."""
  import tensorflow as tf

  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation=INTERPOLATIONS[interpolation], fill_mode=FILL_MODES[fill_mode])


def apply_transform(image, transform, fill_mode: str = "nearest", interpolation: str = "bilinear"):
  """Resamples one (H, W, C) float image: output[y, x] = image[matrix @ (x, y, 1)]."""
  return apply_transforms(image[None], transform[None, :AFFINE_WIDTH], fill_mode,
                          interpolation)[0]


def augment_row(image, transform, config):
  """One cached float (H, W, C) film under its transform row (TensorFlow, in tf.data): the affine
  resampling, then the acquisition augmentation (NumPy, `acquisition.apply`) when it is on."""
  from radjax.data import acquisition

  image = apply_transform(image, transform, config.fill_mode, config.interpolation)
  if not acquisition.active(config):
    return image
  tf = _tensorflow()
  out = tf.numpy_function(lambda i, p: acquisition.apply(np, i, p, config),
                          [image, transform[AFFINE_WIDTH:]], tf.float32, stateful=False)
  return tf.ensure_shape(out, image.shape)


def _tensorflow():
  from radjax.data.preprocess import tensorflow

  return tensorflow()


def augment(image, uniforms, config):
  """Randomly transforms one float32 (H, W, C) image from its 7 draws (a row of epoch_uniforms)."""
  height, width = int(image.shape[0]), int(image.shape[1])
  matrix = affine_matrix(params_from_uniforms(uniforms, config, height, width), height, width)
  return apply_transform(image, to_transforms(matrix), config.fill_mode, config.interpolation)
