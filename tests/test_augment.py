"""Augmentation: Keras parity, geometry, eager == tf.data, parameter ranges, determinism."""

import math

import numpy as np
import pytest
from PIL import Image

from radjax.configs import default
from radjax.data import augment, preprocess

tf = preprocess.tensorflow()
SIZE = 64


@pytest.fixture(scope="module")
def image(dataset_dir):
  path = dataset_dir / "TRAIN" / "chest" / "chst33.png"
  return np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE)), np.float32)


def _params(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip=False):
  return {"theta": math.radians(theta), "tx": tx, "ty": ty, "shear": math.radians(shear),
          "zx": zx, "zy": zy, "flip": flip}


def _apply(image, **kw):
  matrix = augment.affine_matrix(_params(**kw), image.shape[0], image.shape[1])
  return augment.apply_transform(tf.constant(image), augment.to_transforms(matrix)).numpy()


@pytest.mark.parametrize("theta,tx,ty,shear,zx,zy,flip", [
    (17.0, 5.0, -7.0, 0.2, 0.85, 1.15, False),
    (-12.0, -3.5, 9.25, -0.15, 1.2, 0.8, True),
    (0.0, 0.0, 0.0, 20.0, 1.0, 1.0, False),  # a large shear, so shear geometry is really compared
])
def test_matches_keras_image_data_generator(image, theta, tx, ty, shear, zx, zy, flip):
  from tf_keras.preprocessing.image import ImageDataGenerator

  # Keras (channels_last, square image) applies its `tx` along columns and `ty` along rows.
  expected = ImageDataGenerator(fill_mode="nearest").apply_transform(
      image.copy(), {"theta": theta, "tx": tx, "ty": ty, "shear": shear, "zx": zx, "zy": zy,
                     "flip_horizontal": flip})
  got = _apply(image, theta=theta, tx=tx, ty=ty, shear=shear, zx=zx, zy=zy, flip=flip)
  assert np.abs(got - expected).max() < 0.05  # of 255: float32 vs float64 interpolation weights
  assert np.abs(got - image).mean() > 1.0  # the transform did something


def test_shift_moves_pixels_where_the_matrix_says():
  img = np.zeros((9, 11, 1), np.float32)
  img[4, 6] = 100.0
  out = _apply(img, tx=3, ty=-2)  # output(x, y) reads input(x + 3, y - 2)
  assert out[6, 3, 0] == pytest.approx(100.0) and out.sum() == pytest.approx(100.0)


def test_flip_mirrors_columns(image):
  np.testing.assert_allclose(_apply(image, flip=True), image[:, ::-1], atol=1e-4)


def test_rotation_by_90_degrees_is_rot90(image):
  np.testing.assert_allclose(_apply(image, theta=90.0), np.rot90(image, 1), atol=1e-2)


def test_closed_form_matrix_equals_keras_product():
  """The closed form equals Keras' chain of 3x3 products (with the flip folded in)."""
  h, w = 40, 50
  p = _params(theta=13, tx=4, ty=-3, shear=7, zx=0.9, zy=1.1, flip=True)
  c, s = math.cos(p["theta"]), math.sin(p["theta"])
  m = lambda rows: np.array(rows, np.float64)
  cx, cy = w / 2 - 0.5, h / 2 - 0.5
  chain = (m([[1, 0, cx], [0, 1, cy], [0, 0, 1]]) @ m([[c, -s, 0], [s, c, 0], [0, 0, 1]])
           @ m([[1, 0, 4], [0, 1, -3], [0, 0, 1]])
           @ m([[1, -math.sin(p["shear"]), 0], [0, math.cos(p["shear"]), 0], [0, 0, 1]])
           @ m([[0.9, 0, 0], [0, 1.1, 0], [0, 0, 1]]) @ m([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
           @ m([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]]))
  np.testing.assert_allclose(augment.affine_matrix(p, h, w), chain, atol=1e-12)


def test_eager_equals_tf_data(image):
  config = default.get_config().augment
  table = augment.epoch_transforms(7, 3, 4, config, SIZE, SIZE)
  eager = [augment.augment(tf.constant(image), u, config).numpy()
           for u in augment.epoch_uniforms(7, 3, 4)]
  for a, b in zip(eager, [augment.apply_transform(tf.constant(image), t).numpy() for t in table]):
    np.testing.assert_array_equal(a, b)
  ds = tf.data.Dataset.range(4).map(
      lambda i: augment.apply_transform(tf.constant(image), tf.gather(tf.constant(table), i)))
  for got, want in zip(ds.as_numpy_iterator(), eager):
    np.testing.assert_array_equal(got, want)
  assert not np.array_equal(eager[0], eager[1])


def test_sampled_parameters_stay_in_range():
  config = default.get_config().augment
  params = augment.params_from_uniforms(augment.epoch_uniforms(0, 0, 400), config, 299, 299)
  assert np.abs(params["theta"]).max() <= math.radians(20)
  assert np.abs(params["theta"]).max() > math.radians(18)
  for k in ("tx", "ty"):
    assert np.abs(params[k]).max() <= 0.2 * 299 and np.abs(params[k]).max() > 0.18 * 299
  assert np.abs(params["shear"]).max() <= math.radians(0.2)
  for k in ("zx", "zy"):
    assert params[k].min() >= 0.8 and params[k].max() <= 1.2
  assert 0.4 < params["flip"].mean() < 0.6
  assert np.corrcoef(params["zx"], params["zy"])[0, 1] < 0.2  # independent x and y zoom


def test_draws_are_a_function_of_seed_epoch_index():
  table = augment.epoch_uniforms(1, 2, 10)
  np.testing.assert_array_equal(table, augment.epoch_uniforms(1, 2, 10))
  np.testing.assert_array_equal(table[:3], augment.epoch_uniforms(1, 2, 3))  # row i: index i only
  assert not np.array_equal(table, augment.epoch_uniforms(1, 3, 10))
  assert not np.array_equal(table, augment.epoch_uniforms(2, 2, 10))
  assert len(np.unique(table[:, 0])) == 10
