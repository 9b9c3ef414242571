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

Randomness is stateless: parameters are a function of a per-image seed only, so the same
(seed, epoch, example index) always gives the same image, in eager mode or inside tf.data.
"""

from __future__ import annotations

import math

import tensorflow as tf

FILL_MODES = {"nearest": "NEAREST", "constant": "CONSTANT", "reflect": "REFLECT", "wrap": "WRAP"}
INTERPOLATIONS = {"bilinear": "BILINEAR", "nearest": "NEAREST"}
NUM_RANDOM = 6  # rotation, shift x, shift y, shear, zoom x, zoom y, flip -> uniform draws below


def _range(value, size):
  """Keras: a shift range below 1 is a fraction of the size, otherwise a number of pixels."""
  return value * size if value < 1 else float(value)


def sample_params(seed, config, height: int, width: int) -> dict[str, tf.Tensor]:
  """Draws Keras' transform parameters for one image from a stateless seed (shape [2] int)."""
  u = tf.random.stateless_uniform([NUM_RANDOM + 1], seed=seed, minval=-1.0, maxval=1.0,
                                  dtype=tf.float32)
  z = config.zoom_range
  return {
      "theta": u[0] * config.rotation_range * (math.pi / 180),
      "tx": u[1] * _range(config.width_shift_range, width),
      "ty": u[2] * _range(config.height_shift_range, height),
      "shear": u[3] * config.shear_range * (math.pi / 180),
      "zx": 1.0 + u[4] * z,
      "zy": 1.0 + u[5] * z,
      "flip": tf.logical_and(u[6] < 0.0, config.horizontal_flip),
  }


def affine_matrix(params, height: int, width: int) -> tf.Tensor:
  """3x3 matrix mapping output (x=column, y=row, 1) to input coordinates."""
  c, s = tf.cos(params["theta"]), tf.sin(params["theta"])
  sh_c, sh_s = tf.cos(params["shear"]), tf.sin(params["shear"])
  one, zero = tf.ones([]), tf.zeros([])

  def m(rows):
    return tf.stack([tf.stack(r) for r in rows])

  cx, cy = width / 2 - 0.5, height / 2 - 0.5
  to_center = m([[one, zero, one * cx], [zero, one, one * cy], [zero, zero, one]])
  from_center = m([[one, zero, -one * cx], [zero, one, -one * cy], [zero, zero, one]])
  rotation = m([[c, -s, zero], [s, c, zero], [zero, zero, one]])
  shift = m([[one, zero, params["tx"]], [zero, one, params["ty"]], [zero, zero, one]])
  shear = m([[one, -sh_s, zero], [zero, sh_c, zero], [zero, zero, one]])
  zoom = m([[params["zx"], zero, zero], [zero, params["zy"], zero], [zero, zero, one]])
  mirror = m([[-one, zero, one * (width - 1)], [zero, one, zero], [zero, zero, one]])
  flip = tf.where(params["flip"], mirror, tf.eye(3))
  return to_center @ rotation @ shift @ shear @ zoom @ from_center @ flip


def apply_matrix(image, matrix, fill_mode: str = "nearest", interpolation: str = "bilinear"):
  """Resamples one (H, W, C) float image: output[y, x] = image[matrix @ (x, y, 1)]."""
  height, width = image.shape[0], image.shape[1]
  transform = tf.concat([tf.reshape(matrix[:2], [6]), tf.zeros([2])], axis=0)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=[height, width],
      fill_value=0.0, interpolation=INTERPOLATIONS[interpolation], fill_mode=FILL_MODES[fill_mode])
  return out[0]


def augment(image, seed, config):
  """Randomly transforms one float32 (H, W, C) image; `seed` is a stateless seed, shape [2]."""
  height, width = image.shape[0], image.shape[1]
  matrix = affine_matrix(sample_params(seed, config, height, width), height, width)
  return apply_matrix(image, matrix, config.fill_mode, config.interpolation)


def example_seed(seed: int, epoch, index):
  """The stateless seed of one example in one epoch: a pure function of (seed, epoch, index)."""
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
  return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))
