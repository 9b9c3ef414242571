"""Explanations: Grad-CAM against a TensorFlow reference, occlusion, and a marker the model uses."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from radjax.commands import cli
from radjax.models import Classifier, weights
from radjax.training import explanation, run as run_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.usefixtures("optimized_xla")
def test_gradcam_equals_tensorflow_gradient_tape(keras_notop):
  import tensorflow as tf
  import tf_keras

  backbone, path = keras_notop
  features = tf_keras.layers.GlobalAveragePooling2D()(backbone.output)
  hidden = tf_keras.layers.Dense(256, activation="relu")(features)
  logit = tf_keras.layers.Dense(1)(tf_keras.layers.Dropout(0.5)(hidden))
  layer = "mixed5"
  keras_model = tf_keras.Model(backbone.input, [backbone.get_layer(layer).output, logit])

  model = Classifier()
  x = np.random.default_rng(3).uniform(-1, 1, (1, 150, 150, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  variables, _ = weights.load_into_classifier(variables, str(path))
  keras_model.layers[-3].set_weights([np.asarray(variables["params"]["hidden"]["kernel"]),
                                      np.asarray(variables["params"]["hidden"]["bias"])])
  keras_model.layers[-1].set_weights([np.asarray(variables["params"]["logits"]["kernel"]),
                                      np.asarray(variables["params"]["logits"]["bias"])])
  tx = tf.constant(x)
  with tf.GradientTape() as tape:
    activations, out = keras_model(tx, training=False)
    target = out[:, 0]
  grads = tape.gradient(target, activations)
  channel_weights = tf.reduce_mean(grads, axis=(1, 2))
  expected = tf.nn.relu(tf.reduce_sum(activations * channel_weights[:, None, None, :], -1))[0]
  expected = expected.numpy()

  got, got_logit = explanation.gradcam(model, variables, x[0], layer)
  assert got.shape == expected.shape == (7, 7)
  assert got_logit == pytest.approx(float(target[0]), rel=1e-4)
  assert expected.max() > 0 and np.count_nonzero(expected) > 5  # not a trivial map
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * expected.max())
  # The first class's map is that of the negated logit.
  negated, _ = explanation.gradcam(model, variables, x[0], layer, sign=-1.0)
  assert not np.allclose(negated, got)


@pytest.fixture(scope="module")
def marker_run(tmp_path_factory, learning_seed):
  from conftest import marker_dataset, train_smoke

  # "marked" films carry a bright square in the top-left corner: only the marker decides.
  data = marker_dataset(tmp_path_factory.mktemp("marker"),
                        {"blank": None, "marked": (10, 10, 30)}, size=150, seed=learning_seed)
  workdir = tmp_path_factory.mktemp("run") / "marker"
  train_smoke(data, workdir, "--config.image_size=150", "--config.num_epochs=3",
              "--config.batch_size=4", "--config.learning_rate=0.001",
              "--config.augment.enabled=false", f"--config.seed={learning_seed}")
  return data, workdir


@pytest.mark.slow
def test_maps_of_a_model_that_uses_a_marker_point_at_the_marker(marker_run, tmp_path, capsys,
                                                                record_property):
  data, workdir = marker_run
  trained = run_lib.load(workdir, "latest")
  history = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  record_property("val_accuracy", history[-1]["val_accuracy"])
  assert history[-1]["val_accuracy"] == 1.0  # it learned the marker (seeds 0-4: all 1.0)
  # Each marked VAL film's maps: how much of a map's evidence lies in the marker's corner (rows
  # and columns 0-60, 16% of the film; the marker is 10-40) against the share an uninformative
  # map would put there (1), and whether the map peaks there. Over --learning-seed 0-4, 4 films
  # each: occlusion concentrated 2.2-5.3 times and peaked in the corner on all 20. Grad-CAM at
  # mixed2 did so 4.6-5.4 times on seeds 0 and 2-4 but put no evidence there at all on seed 1 (a
  # 3-epoch network from random weights need not route the marker through that block), so only
  # occlusion, which asks the model itself, is held to the marker here; Grad-CAM's arithmetic
  # is pinned against TensorFlow in test_gradcam_equals_tensorflow_gradient_tape above.
  window = np.zeros((150, 150), bool)
  window[:60, :60] = True
  for path in sorted((data / "VAL" / "marked").glob("*.png")):
    e = explanation.explain_file(trained, path, layer="mixed2")
    assert e.gradcam.shape == e.occlusion.shape == (150, 150)
    assert np.all(np.isfinite(e.gradcam)) and e.gradcam.min() >= 0
    assert e.label == "marked" and e.probability > 0.5
    for name, heat in (("gradcam", e.gradcam), ("occlusion", e.occlusion)):
      positive = np.clip(heat, 0, None)
      concentration = positive[window].sum() / max(positive.sum(), 1e-30) / window.mean()
      row, col = np.unravel_index(np.argmax(heat), heat.shape)
      record_property(f"{path.stem}_{name}_concentration", float(concentration))
      record_property(f"{path.stem}_{name}_peak_in_corner", float(window[row, col]))
      if name == "occlusion":
        assert window[row, col] and concentration >= 1.5, (path.name, row, col, concentration)


@pytest.mark.slow
def test_explain_command_writes_figures_and_reads_dicom(marker_run, tmp_path, capsys):
  from PIL import Image

  from conftest import write_dicom

  data, workdir = marker_run
  source = sorted((data / "VAL" / "marked").glob("*.png"))[0]
  pixels = np.asarray(Image.open(source))
  inputs = tmp_path / "in"
  inputs.mkdir()
  write_dicom(inputs / "film.dcm", pixels, WindowCenter=127.5, WindowWidth=256)
  shutil.copy(source, inputs / "film_png.png")
  (inputs / "broken.png").write_text("not an image")
  out = tmp_path / "out"
  assert cli.main(["explain", "--workdir", str(workdir), "--checkpoint", "latest", "--out",
                   str(out), "--layer", "mixed2", str(inputs)]) == 1  # one bad file
  stdout, stderr = capsys.readouterr()
  assert "broken.png" in stderr and "Traceback" not in stderr
  assert (out / "film.explain.png").stat().st_size > 20_000
  assert (out / "film_png.explain.png").stat().st_size > 20_000
  lines = [l for l in stdout.splitlines() if l.startswith(str(inputs))]
  assert len(lines) == 2 and all(" marked  -> " in l for l in lines)
  assert sorted(l.rsplit(" -> ", 1)[1] for l in lines) == [str(out / "film.explain.png"),
                                                            str(out / "film_png.explain.png")]
  assert cli.main(["explain", "--workdir", str(workdir), "--out", str(out), "--layer", "mixed11",
                   str(inputs)]) == 2
  assert "--layer mixed11: expected one of mixed0" in capsys.readouterr().err


def test_occlusion_drops_are_the_score_lost_under_each_patch_and_reuse_a_given_base():
  image = np.zeros((8, 8, 3), np.float32)
  image[0:2, 0:2] = 1.0  # all the "evidence" sits in the top-left corner
  calls = []

  def score_of(batch, size):  # a stand-in network: the sum of the pixels
    calls.append(len(batch))
    assert len(batch) <= size
    return batch.reshape(len(batch), -1).sum(axis=1)

  drop, starts = explanation.occlusion(score_of, image, patch=4, stride=2, batch_size=4)
  assert starts == [0, 2, 4]
  # The patch's value is the image's mean, 4/64 per channel. The top-left patch takes away the
  # corner's 12 ones and puts 16 pixels x 3 channels of 1/16 in their place.
  assert drop[0, 0] == pytest.approx(12 - 3)
  assert drop[2, 2] == pytest.approx(-3)  # covers none of the corner: it only adds the fill
  assert calls == [1, 4, 4, 1]  # the base alone, then the 9 occluded copies
  calls.clear()
  again, _ = explanation.occlusion(score_of, image, patch=4, stride=2, batch_size=4, base=12.0)
  np.testing.assert_allclose(again, drop)
  assert calls == [4, 4, 1]  # the given base is not computed again
