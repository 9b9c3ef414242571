"""Training end to end, resume, freezing, sharding, precise BN, metrics, NaN handling."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from radjax import checkpoints, cli, config as config_lib, data, evaluate, train
from radjax.errors import UserError
from conftest import copy_subset

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(dataset_dir, tmp_path_factory):
  """5 + 5 training and 2 + 2 validation images of the real dataset (2 steps of 5 per epoch)."""
  return copy_subset(dataset_dir, tmp_path_factory.mktemp("tiny"), {"TRAIN": 5, "VAL": 2})


@pytest.fixture(scope="module")
def jit_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def smoke_args(data_dir, jit_cache, *extra):
  return ["--config", str(REPO / "configs" / "smoke.py"), f"--config.data_dir={data_dir}",
          f"--config.compilation_cache={jit_cache}", *extra]


def smoke_config(data_dir, jit_cache, *extra):
  return config_lib.load_config(REPO / "configs" / "smoke.py",
                                smoke_args(data_dir, jit_cache, *extra)[2:])


@pytest.fixture(scope="module")
def trained(tiny_data, jit_cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run") / "smoke"
  assert cli.main(["train", "--workdir", str(workdir), *smoke_args(tiny_data, jit_cache)]) == 0
  return workdir


def _final_model(workdir):
  variables, meta, epoch = checkpoints.load_for_inference(workdir, "latest")
  return variables, meta, epoch


def test_smoke_train_writes_checkpoints_history_and_curves(trained):
  history = [json.loads(l) for l in (trained / "metrics.jsonl").read_text().splitlines()]
  assert [h["epoch"] for h in history] == [1, 2]
  for h in history:
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "images_per_s"):
      assert np.isfinite(h[key]), key
  assert (trained / "curves.png").stat().st_size > 10_000
  assert any((trained / "tensorboard").iterdir())
  variables, meta, epoch = _final_model(trained)
  assert epoch == 2 and meta["class_names"] == ["abd", "chest"]
  assert meta["preprocessing"]["image_size"] == 75 and meta["preprocessing"]["value_range"] == "inception"
  assert meta["versions"]["jax"] == jax.__version__
  assert meta["metrics"]["val_loss"] == pytest.approx(history[1]["val_loss"])


def test_evaluate_writes_metrics_and_roc(trained, tiny_data, tmp_path, capsys):
  assert cli.main(["evaluate", "--workdir", str(trained), "--out", str(tmp_path),
                   "--checkpoint", "latest"]) == 0
  result = json.loads((tmp_path / "metrics.json").read_text())
  assert result["count"] == 4 and result["epoch"] == 2
  assert sum(map(sum, result["confusion_matrix"])) == 4
  history = [json.loads(l) for l in (trained / "metrics.jsonl").read_text().splitlines()]
  assert result["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
  assert (tmp_path / "roc.png").stat().st_size > 10_000
  assert "confusion matrix" in capsys.readouterr().out


def test_predict_lines_json_csv_and_bad_files(trained, tiny_data, tmp_path, capsys):
  bad = tmp_path / "broken.png"
  bad.write_text("not an image")
  val = tiny_data / "VAL"
  assert cli.main(["predict", "--workdir", str(trained), str(val / "chest"), str(bad)]) == 1
  out, err = capsys.readouterr()
  lines = out.strip().splitlines()
  assert len(lines) == 3
  for line in lines[:2]:
    assert "p(chest)=" in line and line.split()[-1] in ("abd", "chest")
  assert "broken.png" in lines[2] and "ERROR" in lines[2] and "broken.png" in err

  assert cli.main(["predict", "--workdir", str(trained), "--checkpoint", "latest", "--json",
                   str(val)]) == 0
  result = json.loads(capsys.readouterr().out)
  probabilities = [p["probability"] for p in result["predictions"]]
  assert result["class_names"] == ["abd", "chest"] and len(probabilities) == 4
  assert all(0 <= p <= 1 for p in probabilities)
  # Predictions equal evaluate's: same preprocessing, same checkpoint.
  variables, meta, _ = _final_model(trained)
  config = config_lib.config_from_dict(meta["config"])
  folders = data.list_folders(tiny_data)
  batch = next(data.Pipeline(folders, config).eval_batches("val", 4))
  logits = train.predict_logits(variables, batch["image"], model=train.create_model(config))
  np.testing.assert_allclose(sorted(probabilities), sorted(jax.nn.sigmoid(logits)), atol=1e-3)

  csv_path = tmp_path / "p.csv"
  assert cli.main(["predict", "--workdir", str(trained), "--csv", str(csv_path), str(val)]) == 0
  assert len(csv_path.read_text().strip().splitlines()) == 5


def test_resume_after_epoch_1_matches_uninterrupted_run(trained, tiny_data, jit_cache, tmp_path):
  workdir = tmp_path / "resumed"
  args = ["train", "--workdir", str(workdir), *smoke_args(tiny_data, jit_cache)]
  assert cli.main(args + ["--config.num_epochs=1"]) == 0  # the run "killed" after epoch 1
  assert cli.main(args) == 0  # the same command again resumes
  a, _, _ = _final_model(trained)
  b, _, _ = _final_model(workdir)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  load = lambda w: [json.loads(l) for l in (w / "metrics.jsonl").read_text().splitlines()]
  for x, y in zip(load(trained), load(workdir), strict=True):
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_auc"):
      assert x[key] == y[key], key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, jit_cache, tmp_path,
                                                           monkeypatch):
  original = data.Pipeline.train_batches

  def poisoned(self, batch_size, first_epoch, last_epoch=None):
    batches = original(self, batch_size, first_epoch, last_epoch)
    for step, batch in enumerate(batches):
      if first_epoch + step // self.steps_per_epoch(batch_size) == 2:
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      yield batch

  monkeypatch.setattr(data.Pipeline, "train_batches", poisoned)
  config = smoke_config(tiny_data, jit_cache)
  with pytest.raises(train.TrainingError, match="epoch 2.*Last good checkpoint: epoch 1"):
    train.train_and_evaluate(config, tmp_path / "nan")
  with checkpoints.manager(tmp_path / "nan", keep=3) as mngr:
    assert list(mngr.all_steps()) == [1]


def _random_batch(n, size=75, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32),
          "label": rng.integers(0, 2, n).astype(np.int32)}


def test_frozen_parameters_stay_bit_equal(tiny_data, jit_cache):
  config = smoke_config(tiny_data, jit_cache, "--config.fine_tune=from:mixed5")
  model = train.create_model(config)
  variables, _ = train.initial_variables(config, model, 75)
  tx = train.make_optimizer(config, variables["params"])
  steps = train.Steps(model, tx, train.make_mesh())
  before = jax.device_get(variables)
  state = steps.replicate(train.create_state(variables, tx))
  for i in range(2):
    state, _ = steps.train(state, steps.shard(_random_batch(5, seed=i)), jax.random.key(0))
  after = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  changed = {}
  for collection in ("params", "batch_stats"):
    for unit, tree in before[collection]["backbone"].items():
      same = all(np.array_equal(x, y) for x, y in zip(
          jax.tree.leaves(tree), jax.tree.leaves(after[collection]["backbone"][unit])))
      changed[(collection, unit)] = not same
  frozen = {k: v for k, v in changed.items() if train.stage_of(k[1]) < 6}  # stem, mixed0..4
  trainable = {k: v for k, v in changed.items() if train.stage_of(k[1]) >= 6}
  assert frozen and not any(frozen.values())
  assert trainable and all(trainable.values())
  assert not np.array_equal(before["params"]["logits"]["kernel"], after["params"]["logits"]["kernel"])


def test_fine_tune_settings():
  assert train.frozen_stages("all") == 0 and train.frozen_stages("head") == 12
  assert train.frozen_stages("from:mixed0") == 1 and train.frozen_stages("from:mixed10") == 11
  for bad in ("some", "from:mixed11", "from:mixedX"):
    with pytest.raises(UserError):
      train.frozen_stages(bad)


def test_precise_bn_equals_full_batch_statistics(tiny_data, jit_cache):
  config = smoke_config(tiny_data, jit_cache)
  model = train.create_model(config)
  variables, _ = train.initial_variables(config, model, 75)
  tx = train.make_optimizer(config, variables["params"])
  steps = train.Steps(model, tx, train.make_mesh())
  state = train.create_state(variables, tx)
  images = _random_batch(8)["image"]
  rng = jax.random.key(0)
  full = train.precise_batch_stats(steps, state, [{"image": images}], rng)
  halves = train.precise_batch_stats(steps, state, [{"image": images[:4]}, {"image": images[4:]}], rng)
  # Reference: flax' own training-mode statistics of the whole batch (momentum 0).
  _, updates = model.clone(bn_momentum=0.0).apply(variables, images, train=True,
                                                  rngs={"dropout": rng}, mutable=["batch_stats"])
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(updates["batch_stats"])):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4 * np.abs(y).max())
  # The first layer's input does not depend on batching: two halves give the full statistics.
  for key in ("mean", "var"):
    want = full["backbone"]["stem_1"]["bn"][key]
    np.testing.assert_allclose(halves["backbone"]["stem_1"]["bn"][key], want, rtol=1e-3,
                               atol=1e-4 * np.abs(want).max())
  assert not np.allclose(full["backbone"]["stem_1"]["bn"]["var"],
                         variables["batch_stats"]["backbone"]["stem_1"]["bn"]["var"])


def test_two_devices_follow_the_one_device_trajectory(tmp_path):
  script = textwrap.dedent("""
      import json, sys
      import jax, numpy as np
      sys.path.insert(0, %r)
      from radjax import config as config_lib, train
      config = config_lib.load_config(%r, ["--config.batch_size=8",
                                           "--config.fine_tune=from:mixed7",
                                           "--config.conv_impl=xla"])
      model = train.create_model(config)
      variables, _ = train.initial_variables(config, model, 75)
      variables = jax.device_get(variables)  # host copy: each run's state is donated
      rng = np.random.default_rng(0)
      batches = [{"image": rng.uniform(-1, 1, (8, 75, 75, 3)).astype(np.float32),
                  "label": rng.integers(0, 2, 8).astype(np.int32)} for _ in range(3)]
      losses = {}
      for n in (1, 2):
        tx = train.make_optimizer(config, variables["params"])
        mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=jax.devices()[:n])
        steps = train.Steps(model, tx, mesh)
        state = steps.replicate(train.create_state(variables, tx))
        losses[n] = []
        for b in batches:
          state, m = steps.train(state, steps.shard(b), jax.random.key(0))
          losses[n].append(float(m["loss"]))
      print(json.dumps({"devices": jax.device_count(), "losses": losses}))
  """ % (str(REPO), str(REPO / "configs" / "smoke.py")))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                       text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result["devices"] == 2
  one, two = result["losses"]["1"], result["losses"]["2"]
  assert one[0] != one[-1]  # the model learns, so the trajectories are really compared
  # Same first loss to float rounding (1e-4: 94 BatchNorms amplify it); later steps within 1%. Training-mode BatchNorm (mixed7
  # on, its statistics reduced over both devices), dropout and the gradient all-reduce are all
  # exercised. lax.conv, whose rounding does not depend on the batch split (the GEMM lowering's
  # blocking does, by ~3e-5, enough for the chaos below). From random init with every layer
  # trainable the comparison is meaningless: Adam's
  # first step moves each weight by +-lr whatever the gradient's size, so float-rounding sign flips
  # of near-zero gradients send both runs (and any two reduction orders) apart.
  assert two[0] == pytest.approx(one[0], rel=1e-4)
  np.testing.assert_allclose(two, one, rtol=1e-2)


def test_metrics_match_scikit_learn():
  logits = np.array([-3.0, -0.2, 0.4, 2.5, -1.0, 0.1, 40.0, -40.0])
  labels = np.array([0, 0, 1, 1, 1, 0, 1, 0])
  result = evaluate.binary_metrics(logits, labels)
  probability = 1 / (1 + np.exp(-logits))
  assert result["loss"] == pytest.approx(skm.log_loss(labels, probability), rel=1e-6)
  assert result["auc"] == pytest.approx(skm.roc_auc_score(labels, probability))
  assert result["accuracy"] == pytest.approx(6 / 8)
  assert result["confusion_matrix"] == skm.confusion_matrix(labels, probability > 0.5).tolist()
  assert result["sensitivity"] == pytest.approx(3 / 4) and result["specificity"] == pytest.approx(3 / 4)
  assert np.isfinite(evaluate.log_loss_from_logits(np.array([1e4]), np.array([0])))


def test_config_overrides_are_typed_and_checked():
  config = config_lib.load_config(REPO / "configs" / "hello_world.py",
                                  ["--config.num_epochs=5", "--config.augment.enabled", "false"])
  assert config.num_epochs == 5 and config.augment.enabled is False
  assert config.batch_size == 5 and config.learning_rate == 1e-4 and config.image_size == 299
  for bad in (["--config.num_epoch=5"], ["--config.num_epochs=five"], ["--config.augment.nope=1"]):
    with pytest.raises(UserError):
      config_lib.load_config(REPO / "configs" / "hello_world.py", bad)
  with pytest.raises(AttributeError):
    config.new_field = 1  # locked: a typo in code fails too
