"""Keras -> Flax InceptionV3: layer order, numerical parity, strictness, CLI."""

import shutil
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radjax.commands import cli
from radjax.models import Classifier, InceptionV3, lowering, weights


def _relative_error(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_importing_models_and_weights_does_not_import_tensorflow():
  code = "import radjax.models, radjax.models.weights, radjax.training.run, sys; assert 'tensorflow' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True)


def test_parameter_count_matches_keras():
  shapes = weights.backbone_shapes()
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == 21_802_784


def test_layer_order_matches_keras(keras_notop):
  model, _ = keras_notop
  keras_shapes = [tuple(l.weights[0].shape) for l in model.layers if l.weights]
  shapes = weights.backbone_shapes()
  ours = [shapes["params"][unit]["conv" if kind == "conv" else "bn"]
          ["kernel" if kind == "conv" else "bias"].shape
          for unit, kind in weights.keras_layer_order()]
  assert ours == keras_shapes


@pytest.mark.parametrize("size,conv_impl", [((299, 299), "xla"), ((96, 131), "xla"),
                                            ((96, 131), "gemm")])
@pytest.mark.usefixtures("optimized_xla")
def test_backbone_parity_with_keras(keras_notop, size, conv_impl):
  model, path = keras_notop
  variables = weights.keras_h5_to_variables(path)
  x = np.random.default_rng(1).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
  expected = model(x, training=False).numpy()
  got = np.asarray(jax.jit(InceptionV3(**lowering(conv_impl)).apply)(variables, x))
  assert got.shape == expected.shape
  assert _relative_error(got, expected) <= 1e-4


@pytest.mark.slow
@pytest.mark.usefixtures("optimized_xla")
def test_classifier_parity_with_keras(keras_notop):
  import tf_keras

  backbone, path = keras_notop
  features = tf_keras.layers.GlobalAveragePooling2D()(backbone.output)
  hidden = tf_keras.layers.Dense(256, activation="relu")(features)
  dropped = tf_keras.layers.Dropout(0.5)(hidden)
  probability = tf_keras.layers.Dense(1, activation="sigmoid")(dropped)
  keras_model = tf_keras.Model(backbone.input, probability)

  model = Classifier()
  x = np.random.default_rng(2).uniform(-1, 1, (3, 96, 131, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x[:1])
  variables, report = weights.load_into_classifier(variables, str(path))
  assert report.fresh == ["hidden", "logits"] and report.loaded_leaves == 94 * 4
  # The head is random on both sides: copy radjax's fresh head into Keras.
  keras_model.layers[-3].set_weights([np.asarray(variables["params"]["hidden"]["kernel"]),
                                      np.asarray(variables["params"]["hidden"]["bias"])])
  keras_model.layers[-1].set_weights([np.asarray(variables["params"]["logits"]["kernel"]),
                                      np.asarray(variables["params"]["logits"]["bias"])])
  expected = keras_model(x, training=False).numpy()[:, 0]
  got = np.asarray(jax.nn.sigmoid(jax.jit(model.apply)(variables, x)))
  assert np.max(np.abs(got - expected)) <= 1e-4
  assert np.ptp(expected) > 1e-3  # the comparison is not between constants


def test_loading_fills_backbone_and_keeps_head(keras_notop):
  _, path = keras_notop
  model = Classifier()
  fresh = model.init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
  loaded, _ = weights.load_into_classifier(fresh, str(path))
  converted = weights.keras_h5_to_variables(path)
  np.testing.assert_array_equal(loaded["params"]["backbone"]["stem_1"]["conv"]["kernel"],
                                converted["params"]["stem_1"]["conv"]["kernel"])
  np.testing.assert_array_equal(loaded["batch_stats"]["backbone"]["mixed10_branch_pool_2"]["bn"]["var"],
                                converted["batch_stats"]["mixed10_branch_pool_2"]["bn"]["var"])
  for name in ("hidden", "logits"):
    for a, b in zip(jax.tree.leaves(loaded["params"][name]), jax.tree.leaves(fresh["params"][name])):
      np.testing.assert_array_equal(a, b)


def _copy(path, tmp_path, name):
  out = tmp_path / name
  shutil.copy(path, out)
  return out


def test_wrong_kernel_shape_is_named(keras_notop, tmp_path):
  _, path = keras_notop
  bad = _copy(path, tmp_path, "bad_shape.h5")
  with h5py.File(bad, "r+") as f:
    del f["conv2d_5/conv2d_5/kernel:0"]
    f["conv2d_5/conv2d_5"].create_dataset("kernel:0", data=np.zeros((3, 3, 192, 64), np.float32))
  with pytest.raises(weights.WeightsError, match=r"'conv2d_5' holds 3x3x192x64.*needs 1x1x192x64"):
    weights.keras_h5_to_variables(bad)


def test_missing_layer_is_named(keras_notop, tmp_path):
  _, path = keras_notop
  bad = _copy(path, tmp_path, "missing.h5")
  with h5py.File(bad, "r+") as f:
    names = [n for n in f.attrs["layer_names"] if n not in (b"conv2d_93", "conv2d_93")]
    f.attrs["layer_names"] = names
  with pytest.raises(weights.WeightsError, match=r"'batch_normalization_85'.*needs"):
    weights.keras_h5_to_variables(bad)


def test_top_included_file_is_rejected(tmp_path):
  import tf_keras

  model = tf_keras.applications.InceptionV3(weights=None, include_top=True)
  path = tmp_path / "with_top.h5"
  model.save_weights(str(path))
  with pytest.raises(weights.WeightsError, match="'predictions'.*classification top"):
    weights.keras_h5_to_variables(path)


def test_non_hdf5_file_is_rejected(tmp_path):
  path = tmp_path / "notes.h5"
  path.write_text("not weights")
  with pytest.raises(weights.WeightsError, match="not an HDF5 file"):
    weights.keras_h5_to_variables(path)
  assert cli.main(["convert-weights", str(path), str(tmp_path / "out")]) == 2


def test_imagenet_offline_fails_fast(monkeypatch, tmp_path):
  monkeypatch.setenv("RADJAX_CACHE", str(tmp_path))
  monkeypatch.setattr(weights, "IMAGENET_NOTOP_URL", "http://127.0.0.1:9/notop.h5")
  with pytest.raises(weights.WeightsError, match="weights=none"):
    weights.backbone_variables("imagenet")


def test_convert_weights_cli_round_trip(keras_notop, tmp_path, capsys):
  _, path = keras_notop
  out = tmp_path / "converted"
  assert cli.main(["convert-weights", str(path), str(out)]) == 0
  assert "Converted" in capsys.readouterr().out
  restored, source = weights.backbone_variables(str(out))
  converted = weights.keras_h5_to_variables(path)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(converted)):
    np.testing.assert_array_equal(a, b)
