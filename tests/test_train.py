"""Training end to end, resume, freezing, sharding, precise BN, metrics, NaN handling."""

import gc
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from radjax.commands import cli
from radjax.data import files, images, listing, preprocess
from radjax.metrics import classification as metrics
from radjax.models.stages import frozen_stages, stage_of
from radjax.training import checkpoints, config as config_lib
from radjax.training import decisions, evaluation, loop as train, run as run_lib, scoring
from radjax.training import steps as steps_lib
from radjax.errors import UserError
from conftest import (ROUNDING_FLOOR, assert_within_spread, batch_spread, copy_subset,
                      run_logits_at)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(dataset_dir, tmp_path_factory):
  """5 + 5 training and 2 + 2 validation images of the real dataset (2 steps of 5 per epoch)."""
  return copy_subset(dataset_dir, tmp_path_factory.mktemp("tiny"), {"TRAIN": 5, "VAL": 2})


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


@pytest.mark.slow
def test_the_papers_config_trains_from_the_class_folders(dataset_dir, jit_cache, tmp_path):
  # configs/hello_world.py as a user runs it (its nearest resize, 65 + 10 films), shrunk to one
  # epoch at 75x75 without ImageNet weights.
  workdir = tmp_path / "hello"
  assert cli.main(["train", "--config", str(REPO / "configs" / "hello_world.py"), "--workdir",
                   str(workdir), f"--config.data_dir={dataset_dir}", "--config.weights=none",
                   "--config.image_size=75", "--config.num_epochs=1",
                   f"--config.compilation_cache={jit_cache}"]) == 0
  [record] = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert record["epoch"] == 1 and record["precise_bn_seconds"] > 0
  for key in ("loss", "val_loss", "val_auc"):
    assert np.isfinite(record[key]), key
  assert record["val_accuracy"] in {k / 10 for k in range(11)}  # of the 10 validation films
  assert checkpoints.meta_of(workdir, "latest")["preprocessing"]["resize_method"] == "nearest"


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


def test_stress_scores_what_predict_scores_for_png_and_dicom(trained, tiny_data, tmp_path,
                                                             capsys):
  """The clean row is evaluate's, an inverted film scores as predict scores the inverted file,
  and the same films as DICOM give the same rows."""
  from PIL import Image

  from conftest import write_dicom

  out = tmp_path / "png"
  assert cli.main(["stress", "--workdir", str(trained), "--checkpoint", "latest", "--families",
                   "band,invert,jpeg", "--out", str(out)]) == 0
  console = capsys.readouterr().out
  result = json.loads((out / "stress.json").read_text())
  assert [f"{r['family']}:{r['level']}" for r in result["conditions"]] == [
      "clean:0", "band:1", "band:2", "band:3", "band:4", "invert:1", "jpeg:1", "jpeg:2", "jpeg:3"]
  assert all((out / name).stat().st_size > 10_000 for name in ("stress.png", "contact.png"))
  assert "flips" in console and "Wrote" in console and len(result["images"]) == 4
  clean = result["conditions"][0]
  assert clean["flip_rate"] == 0 and clean["mean_abs_change"] == 0
  evaluated = evaluation.evaluate_workdir(trained, which="latest", out_dir=tmp_path / "eval")
  assert clean["auc"] == pytest.approx(evaluated["auc"])
  assert clean["accuracy"] == pytest.approx(evaluated["accuracy"])
  # The inverted films written as PNGs (integer pixels: exact) and predicted one by one.
  inverted = tmp_path / "inverted"
  inverted.mkdir()
  for path in result["images"]:
    pixels = images.read_image(path)
    Image.fromarray((255 - pixels).astype(np.uint8)).save(inverted / pathlib.Path(path).name)
  clean_p = {pathlib.Path(r.path).name: r.probability
             for r in scoring.predict_files(trained, result["images"], "latest")[0]}
  moved_p = {pathlib.Path(r.path).name: r.probability
             for r in scoring.predict_files(trained, [inverted], "latest")[0]}
  row = result["conditions"][5]
  want = [abs(moved_p[pathlib.Path(p).name] - clean_p[pathlib.Path(p).name])
          for p in result["images"]]
  # stress scores a film's 10 conditions in one batch of 16, predict these 4 films in one of 4:
  # the changes agree to the model's own spread between those batch shapes, measured on the
  # clean and the inverted films (1.01e-5 apart on one AVX-512 CPU, where 1e-5 was guessed).
  logits_at, run = run_logits_at(trained, "latest")
  inputs = {kind: np.stack([preprocess.film_input(pixels, run.config, False) for pixels in films])
            for kind, films in (("clean", [images.read_image(p) for p in result["images"]]),
                                ("inverted", [255 - images.read_image(p)
                                              for p in result["images"]]))}
  spread = sum(batch_spread(logits_at, x, (1, 4, 16)) for x in inputs.values())
  assert_within_spread(row["image_changes"], want, spread)
  # The same films as PNG and as 8-bit DICOM files: the same scores, row for row. (One pixel 0 and
  # one 255, so that DICOM's min-max VOI of a file without a window is the identity.)
  runs = {}
  for kind in ("png", "dcm"):
    for path in result["images"]:
      path = pathlib.Path(path)
      folder = tmp_path / f"{kind}_data" / "VAL" / path.parent.name
      folder.mkdir(parents=True, exist_ok=True)
      pixels = images.read_image(path)[..., 0].astype(np.uint8)
      pixels[0, 0], pixels[0, 1] = 0, 255
      if kind == "png":
        Image.fromarray(pixels).save(folder / path.name)
      else:
        write_dicom(folder / f"{path.stem}.dcm", pixels)
    assert cli.main(["stress", "--workdir", str(trained), "--checkpoint", "latest", "--families",
                     "band,invert,jpeg", "--data", str(tmp_path / f"{kind}_data"), "--out",
                     str(tmp_path / f"{kind}_out")]) == 0
    runs[kind] = json.loads((tmp_path / f"{kind}_out" / "stress.json").read_text())
  for a, b in zip(runs["png"]["conditions"], runs["dcm"]["conditions"]):
    np.testing.assert_allclose(a["image_changes"], b["image_changes"], atol=1e-5)
    assert a["flip_rate"] == b["flip_rate"] and a["auc"] == pytest.approx(b["auc"])


def test_stress_bad_inputs_are_one_line(trained, tiny_data, tmp_path, capsys):
  assert cli.main(["stress", "--workdir", str(trained), "--families", "band,glare"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("radjax stress: error: --families band,glare: unknown glare")
  assert "\n" not in err
  assert cli.main(["stress", "--workdir", str(trained), "--split", "test"]) == 2
  err = capsys.readouterr().err.strip()
  assert "no images in a TEST split" in err and "\n" not in err
  other = tmp_path / "other"
  for name in ("lung", "bone"):
    (other / "VAL" / name).mkdir(parents=True)
    for k, src in enumerate(sorted((tiny_data / "VAL" / "abd").glob("*.png"))):
      (other / "VAL" / name / f"{k}.png").write_bytes(src.read_bytes())
  assert cli.main(["stress", "--workdir", str(trained), "--data", str(other)]) == 2
  assert "differ from the checkpoint's" in capsys.readouterr().err
  assert cli.main(["stress", "--workdir", str(trained), "--families", "bnad,Invert"]) == 2
  assert capsys.readouterr().err.startswith(
      "radjax stress: error: --families bnad,Invert: unknown bnad, Invert (bnad: did you mean "
      "band?; Invert: did you mean invert?) (known: band, letterbox,")
  a_file = tmp_path / "stress.txt"
  a_file.write_text("keep me")
  assert cli.main(["stress", "--workdir", str(trained), "--out", str(a_file)]) == 2
  assert capsys.readouterr().err.strip() == (
      f"radjax stress: error: --out {a_file}: is a file; name a folder for the outputs")
  assert a_file.read_text() == "keep me"  # nothing lost
  # A split that lacks a class, or holds one image: refused by the listing, naming the manifest.
  listed = tmp_path / "listed"
  listed.mkdir()
  for split, name in (("VAL", "abd"), ("TRAIN", "chest")):
    film = sorted((tiny_data / split / name).glob("*.png"))[0]
    (listed / film.name).write_bytes(film.read_bytes())
  manifest = listed / "one.csv"
  manifest.write_text("path,label,split\nabd0.png,abd,val\nchst33.png,chest,train\n")
  assert cli.main(["stress", "--workdir", str(trained), "--data", str(manifest)]) == 2
  assert capsys.readouterr().err.strip() == (
      f"radjax stress: error: {manifest}: no readable chest image in split val; every class "
      "needs images in every split (classes: abd, chest)")


def test_stress_on_the_smallest_split_and_again_into_the_same_out(trained, tiny_data, tmp_path,
                                                                 capsys):
  """One film of each class is enough to count flips; a second run into the same --out
  replaces its files with the same figures (the perturbations are seeded)."""
  small = tmp_path / "small"
  for name in ("abd", "chest"):
    (small / "VAL" / name).mkdir(parents=True)
    film = sorted((tiny_data / "VAL" / name).glob("*.png"))[0]
    (small / "VAL" / name / film.name).write_bytes(film.read_bytes())
  args = ["stress", "--workdir", str(trained), "--checkpoint", "latest", "--data", str(small),
          "--families", "invert", "--out", str(tmp_path / "out")]
  assert cli.main(args) == 0
  first = json.loads((tmp_path / "out" / "stress.json").read_text())
  assert len(first["images"]) == 2 and [r["family"] for r in first["conditions"]] == [
      "clean", "invert"]
  assert first["conditions"][1]["flip_rate"] in (0.0, 0.5, 1.0)  # of 2 decisions
  assert cli.main(args) == 0
  assert "Wrote" in capsys.readouterr().out
  second = json.loads((tmp_path / "out" / "stress.json").read_text())
  assert second["conditions"] == first["conditions"]
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
      "contact.png", "stress.json", "stress.png"]


@pytest.mark.slow
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
  assert "broken.png" in lines[2] and "ERROR" in lines[2]
  # Named once (the ERROR line), counted on stderr: not the same message twice on a terminal.
  assert "broken.png" not in err
  assert "radjax predict: 1 of 3 file(s) could not be read: the ERROR lines above" in err

  assert cli.main(["predict", "--workdir", str(trained), "--checkpoint", "latest", "--json",
                   str(val)]) == 0
  result = json.loads(capsys.readouterr().out)
  probabilities = [p["probability"] for p in result["predictions"]]
  assert result["class_names"] == ["abd", "chest"] and len(probabilities) == 4
  assert all(0 <= p <= 1 for p in probabilities)
  # Predictions equal evaluate's: same preprocessing, same checkpoint.
  variables, meta, _ = _final_model(trained)
  config = config_lib.config_from_dict(meta["config"])
  folders = listing.list_folders(tiny_data)
  pipeline = files.Pipeline(folders, config)
  batch = next(pipeline.eval_batches("val", 4))
  # The very pixels validation saw (one preprocessing function), file for file in path order.
  paths = [p["path"] for p in result["predictions"]]
  assert paths == [e.path for e in pipeline.examples["val"]]
  for path, image in zip(paths, batch["image"]):
    np.testing.assert_array_equal(
        preprocess.model_input(images.read_image(path), config, high_bit=False), image)
  logits = steps_lib.predict_logits(variables, batch["image"], model=run_lib.create_model(config))
  # Equal to float rounding: predict runs batches of 16, evaluation of 4.
  np.testing.assert_allclose(probabilities, jax.nn.sigmoid(logits), atol=1e-4)

  csv_path = tmp_path / "p.csv"
  assert cli.main(["predict", "--workdir", str(trained), "--csv", str(csv_path), str(val)]) == 0
  assert len(csv_path.read_text().strip().splitlines()) == 5


@pytest.mark.slow
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
    for key in LEARNED_KEYS:
      assert x[key] == y[key], key


# What a run's metrics.jsonl holds besides its timings (which differ on every run).
LEARNED_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_auc")


@pytest.mark.slow
def test_the_same_train_command_twice_in_fresh_processes_gives_the_same_run(tiny_data, tmp_path):
  """Seeded shuffling, augmentation (tf.data), dropout, precise BN and XLA's CPU programs: the
  same command on the same machine gives the same numbers bit for bit, the first run compiling
  into an empty compilation cache and the second loading from it. (Across CPUs they differ: see
  docs/training.md, "Reproducibility".)"""
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
  runs = []
  for name in ("first", "second"):
    workdir = tmp_path / name
    done = subprocess.run(
        [sys.executable, "-m", "radjax", "train", "--config", str(REPO / "configs" / "smoke.py"),
         "--workdir", str(workdir), f"--config.data_dir={tiny_data}",
         f"--config.compilation_cache={cache}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    runs.append(workdir)
  load = lambda w: [json.loads(l) for l in (w / "metrics.jsonl").read_text().splitlines()]
  first, second = load(runs[0]), load(runs[1])
  assert [r["epoch"] for r in first] == [1, 2]
  assert [{k: r[k] for k in LEARNED_KEYS} for r in first] == [
      {k: r[k] for k in LEARNED_KEYS} for r in second]
  a, _, _ = _final_model(runs[0])
  b, _, _ = _final_model(runs[1])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, jit_cache, tmp_path,
                                                           monkeypatch):
  original = files.Pipeline.train_batches

  def poisoned(self, batch_size, first_epoch, last_epoch=None, **kwargs):
    batches = original(self, batch_size, first_epoch, last_epoch, **kwargs)
    for step, batch in enumerate(batches):
      if first_epoch + step // self.steps_per_epoch(batch_size) == 2:
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      yield batch

  monkeypatch.setattr(files.Pipeline, "train_batches", poisoned)
  config = smoke_config(tiny_data, jit_cache)
  with pytest.raises(train.TrainingError, match="epoch 2.*Last good checkpoint: epoch 1"):
    train.train_and_evaluate(config, tmp_path / "nan")
  with checkpoints.manager(tmp_path / "nan", keep=3) as mngr:
    assert list(mngr.all_steps()) == [1]


def _random_batch(n, size=75, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32),
          "label": rng.integers(0, 2, n).astype(np.int32)}


@pytest.mark.slow
def test_frozen_parameters_stay_bit_equal(tiny_data, jit_cache):
  config = smoke_config(tiny_data, jit_cache, "--config.fine_tune=from:mixed5")
  run = run_lib.build(config)
  before = jax.device_get(run.state.variables)
  state, steps = run.state, run.steps
  for i in range(2):
    state, _ = steps.train(state, steps.shard(_random_batch(5, seed=i)), jax.random.key(0))
  after = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  changed = {}
  for collection in ("params", "batch_stats"):
    for unit, tree in before[collection]["backbone"].items():
      same = all(np.array_equal(x, y) for x, y in zip(
          jax.tree.leaves(tree), jax.tree.leaves(after[collection]["backbone"][unit])))
      changed[(collection, unit)] = not same
  frozen = {k: v for k, v in changed.items() if stage_of(k[1]) < 6}  # stem, mixed0..4
  trainable = {k: v for k, v in changed.items() if stage_of(k[1]) >= 6}
  assert frozen and not any(frozen.values())
  assert trainable and all(trainable.values())
  assert not np.array_equal(before["params"]["logits"]["kernel"], after["params"]["logits"]["kernel"])


@pytest.mark.slow
def test_runs_with_equal_settings_share_their_steps_and_others_get_their_own(tiny_data, jit_cache):
  first = run_lib.build(smoke_config(tiny_data, jit_cache))
  again = run_lib.build(smoke_config(tiny_data, jit_cache, "--config.num_epochs=7"))
  # Settings the steps do not read (epochs, data) share the traced and compiled functions...
  assert again.steps is first.steps and again.tx is first.tx
  assert again.state is not first.state  # ... never the state
  faster = run_lib.build(smoke_config(tiny_data, jit_cache, "--config.learning_rate=0.001"))
  assert faster.steps is not first.steps
  # Each runs its own optimizer: Adam's first step moves a weight by at most its learning rate,
  # by about that much where the gradient is well above epsilon.
  batch, key = _random_batch(5), jax.random.key(0)
  moved = []
  for run in (first, faster):
    before = np.asarray(run.state.params["logits"]["kernel"])
    state, _ = run.steps.train(run.state, run.steps.shard(batch), key)
    moved.append(np.max(np.abs(np.asarray(state.params["logits"]["kernel"]) - before)))
  assert moved[0] == pytest.approx(1e-4, rel=0.05) and moved[1] == pytest.approx(1e-3, rel=0.05)
  # An inference-only run (`run.load`) of the same model shares nothing with training's.
  _, inference, _ = run_lib._steps_for(first.config, first.model, None)
  assert inference is not first.steps
  run_lib.clear_steps_cache()  # what benchmarks do before timing a compile
  assert run_lib.build(smoke_config(tiny_data, jit_cache)).steps is not first.steps


def test_fine_tune_settings():
  assert frozen_stages("all") == 0 and frozen_stages("head") == 12
  assert frozen_stages("from:mixed0") == 1 and frozen_stages("from:mixed10") == 11
  for bad in ("some", "from:mixed11", "from:mixedX"):
    with pytest.raises(UserError):
      frozen_stages(bad)


@pytest.mark.slow
def test_precise_bn_equals_full_batch_statistics(tiny_data, jit_cache):
  config = smoke_config(tiny_data, jit_cache)
  run = run_lib.build(config)
  model, steps, state = run.model, run.steps, run.state
  variables = jax.device_get(state.variables)
  images = _random_batch(8)["image"]
  images[:4] += 0.5  # two batches with different means: pooling needs mean(var_b) + var(mean_b)
  images[4:] -= 0.5
  rng = jax.random.key(0)
  full = steps.precise_batch_stats(state, [{"image": images}], rng)
  halves = steps.precise_batch_stats(state, [{"image": images[:4]}, {"image": images[4:]}], rng)
  # Reference: the whole batch's training-mode statistics (momentum 0 makes the running averages
  # the batch's own; the running variance is Bessel-corrected, as Keras', so undo that).
  _, updates = model.clone(bn_momentum=0.0).apply(
      variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda module, _: module.name == "bn")

  def biased(path, value):
    if path[-1].key != "var":
      return value
    shape = updates["intermediates"]["backbone"][path[1].key]["bn"]["__call__"][0].shape
    n = np.prod(shape[:-1])
    return value * (n - 1) / n

  reference = jax.tree_util.tree_map_with_path(biased, updates["batch_stats"])
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(reference)):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4 * np.abs(y).max())
  # The first layer's input does not depend on batching: two halves give the full statistics.
  for key in ("mean", "var"):
    want = full["backbone"]["stem_1"]["bn"][key]
    np.testing.assert_allclose(halves["backbone"]["stem_1"]["bn"][key], want, rtol=1e-3,
                               atol=1e-4 * np.abs(want).max())
  assert not np.allclose(full["backbone"]["stem_1"]["bn"]["var"],
                         variables["batch_stats"]["backbone"]["stem_1"]["bn"]["var"])


@pytest.mark.slow
def test_precise_bn_in_fewer_passes_gives_the_same_statistics(tiny_data, jit_cache):
  # Three batches of 2, each with its own offset: one per pass, or two per pass (the second pass
  # padded with a repeat whose moments are dropped), or all three at once.
  run = run_lib.build(smoke_config(tiny_data, jit_cache))
  images = _random_batch(6, seed=1)["image"]
  images[:2] += 0.5
  images[4:] -= 0.5
  batches = [{"image": images[i:i + 2]} for i in (0, 2, 4)]
  rng = jax.random.key(0)
  one = run.steps.precise_batch_stats(run.state, batches, rng, 1)
  for per_call in (2, 3, 8):
    grouped = run.steps.precise_batch_stats(run.state, batches, rng, per_call)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(grouped), jax.tree.leaves(one)):
      # mixed8-10 see 1x1 maps at 75 px: statistics of 2 values per channel amplify float
      # rounding upstream (measured up to 1e-2 relative); earlier layers agree to 1e-4.
      tolerance = 5e-2 if re.search(r"mixed(8|9|10)", jax.tree_util.keystr(path)) else 2e-4
      np.testing.assert_allclose(x, y, rtol=5 * tolerance, atol=tolerance * np.abs(y).max())
  # A padding batch counted by mistake would move the statistics: the check above can fail.
  skewed = run.steps.precise_batch_stats(run.state, batches + [batches[-1]], rng, 1)
  moved = skewed["backbone"]["stem_1"]["bn"]["mean"] - one["backbone"]["stem_1"]["bn"]["mean"]
  assert np.abs(moved).max() > 100 * 2e-4 * np.abs(one["backbone"]["stem_1"]["bn"]["mean"]).max()


@pytest.mark.slow
def test_two_devices_follow_the_one_device_trajectory(tmp_path):
  script = textwrap.dedent("""
      import json, sys
      import jax, numpy as np
      sys.path.insert(0, %r)
      from radjax.training import config as config_lib, run as run_lib, steps as steps_lib
      config = config_lib.load_config(%r, ["--config.batch_size=8",
                                           "--config.fine_tune=from:mixed7",
                                           "--config.conv_impl=xla",
                                           "--config.learning_rate=1e-5"])
      model = run_lib.create_model(config)
      variables, _ = run_lib.initial_variables(config, model)
      variables = jax.device_get(variables)  # host copy: each run's state is donated
      rng = np.random.default_rng(0)
      batches = [{"image": rng.uniform(-1, 1, (8, 75, 75, 3)).astype(np.float32),
                  "label": rng.integers(0, 2, 8).astype(np.int32)} for _ in range(3)]
      losses = {}
      for n in (1, 2):
        tx = run_lib.make_optimizer(config, variables["params"])
        steps = steps_lib.Steps(model, tx, steps_lib.make_mesh(jax.devices()[:n]))
        state = steps.replicate(steps_lib.create_state(variables, tx))
        losses[n] = []
        for b in batches:
          state, m = steps.train(state, steps.shard(b), jax.random.key(0))
          losses[n].append(float(m["loss"]))
      print(json.dumps({"devices": jax.device_count(), "losses": losses}))
  """ % (str(REPO), str(REPO / "configs" / "smoke.py")))
  # YNNPACK's convolutions (XLA's CPU default, which radjax turns off for speed) round the same
  # however the batch is split; XLA's own and the GEMM lowering do not (by ~3e-5, enough for the
  # chaos below), so this comparison of sharding asks for them.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
                                   "--xla_cpu_experimental_ynn_fusion_type=individual_convolution")
  out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                       text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result["devices"] == 2
  one, two = result["losses"]["1"], result["losses"]["2"]
  assert one[0] != one[-1]  # the model learns, so the trajectories are really compared
  # Same first loss to float rounding (1e-4: 94 BatchNorms amplify it); later steps within 0.1%.
  # Training-mode BatchNorm (mixed7 on, its statistics reduced over both devices), dropout and the
  # gradient all-reduce are all exercised. From random init with every layer
  # trainable the comparison is meaningless: Adam's
  # first step moves each weight by +-lr whatever the gradient's size, so float-rounding sign flips
  # of near-zero gradients send both runs (and any two reduction orders) apart.
  assert two[0] == pytest.approx(one[0], rel=1e-4)
  np.testing.assert_allclose(two, one, rtol=1e-3)


def test_metrics_match_scikit_learn():
  logits = np.array([-3.0, -0.2, 0.4, 2.5, -1.0, 0.1, 40.0, -40.0])
  labels = np.array([0, 0, 1, 1, 1, 0, 1, 0])
  result = metrics.binary_metrics(logits, labels)
  probability = 1 / (1 + np.exp(-logits))
  assert result["loss"] == pytest.approx(skm.log_loss(labels, probability), rel=1e-6)
  assert result["auc"] == pytest.approx(skm.roc_auc_score(labels, probability))
  assert result["accuracy"] == pytest.approx(6 / 8)
  assert result["confusion_matrix"] == skm.confusion_matrix(labels, probability > 0.5).tolist()
  assert result["sensitivity"] == pytest.approx(3 / 4) and result["specificity"] == pytest.approx(3 / 4)
  assert np.isfinite(metrics.log_loss_from_logits(np.array([1e4]), np.array([0])))


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


def _copy_run(trained, tmp_path):
  import shutil

  return pathlib.Path(shutil.copytree(trained, tmp_path / "copy", ignore=shutil.ignore_patterns(
      "train.lock")))


@pytest.mark.slow
def test_resume_refuses_settings_that_change_what_the_weights_mean(trained, tiny_data, jit_cache,
                                                                    tmp_path, capsys):
  workdir = _copy_run(trained, tmp_path)
  before = (workdir / "metrics.jsonl").read_text()
  args = ["train", "--workdir", str(workdir), *smoke_args(tiny_data, jit_cache)]
  assert cli.main(args + ["--config.image_size=99", "--config.value_range=unit",
                          "--config.num_epochs=3"]) == 2
  err = capsys.readouterr().err.strip()
  assert "cannot resume with changed image_size 75 -> 99; value_range inception -> unit" in err
  assert len(err.splitlines()) == 1
  assert (workdir / "metrics.jsonl").read_text() == before  # nothing trained, nothing lost


@pytest.mark.slow
def test_resume_with_changed_stage_settings_is_reported_and_recorded(trained, tiny_data, jit_cache,
                                                                     tmp_path, capsys):
  workdir = _copy_run(trained, tmp_path)
  args = ["train", "--workdir", str(workdir), *smoke_args(tiny_data, jit_cache)]
  assert cli.main(args + ["--config.num_epochs=3", "--config.fine_tune=head",
                          "--config.learning_rate=5e-5"]) == 0
  captured = capsys.readouterr()
  out = captured.out
  assert "\r" not in captured.err  # no progress-bar frames when stderr is not a terminal
  assert "Resuming with changed settings: fine_tune all -> head; learning_rate 0.0001 -> 5e-05" \
      in out
  # The resumed run says where its weights come from, and never that they are fresh.
  assert "Resuming from the checkpoint of epoch 2" in out and "freshly initialised" not in out
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == [1, 2, 2, 3]
  assert lines[2]["changes"] == {
      "fine_tune": ["all", "head"], "learning_rate": [1e-4, 5e-5],
      "optimizer_state": ["restored", "re-initialised (its structure follows fine_tune)"]}
  _, meta, epoch = _final_model(workdir)
  assert epoch == 3 and meta["config"]["fine_tune"] == "head"
  # Run again with nothing left to do: says so, trains nothing.
  assert cli.main(args + ["--config.num_epochs=3", "--config.fine_tune=head",
                          "--config.learning_rate=5e-5"]) == 0
  assert "Nothing to do" in capsys.readouterr().out


# Orbax abandons the damaged array's other reads mid-flight; when the garbage collector finds
# those coroutines is a matter of timing (0 or 11 "Exception ignored" warnings in repeated runs).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_train_resumes_from_the_newest_intact_checkpoint(trained, tiny_data, jit_cache, tmp_path,
                                                         caplog):
  workdir = _copy_run(trained, tmp_path)
  model_files = sorted((workdir / "checkpoints" / "2" / "model").rglob("*"),
                       key=lambda p: p.stat().st_size if p.is_file() else 0)
  model_files[-1].write_bytes(b"")  # the largest file of epoch 2's parameters: damaged
  args = ["train", "--workdir", str(workdir), *smoke_args(tiny_data, jit_cache)]
  with caplog.at_level("WARNING", logger="radjax"):
    assert cli.main(args) == 0
  assert "damaged" in caplog.text
  assert (workdir / "damaged_checkpoints" / "2").is_dir()  # set aside, never deleted
  a, _, _ = _final_model(trained)
  b, _, epoch = _final_model(workdir)
  assert epoch == 2
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):  # epoch 2 trained again, exactly
    np.testing.assert_array_equal(x, y)
  gc.collect()  # now, under this test's filter, not in whichever test runs next


def test_a_second_train_on_a_locked_workdir_stops_at_once(trained, tiny_data, jit_cache, capsys):
  from radjax.training import workdir as workdir_lib

  args = ["train", "--workdir", str(trained), *smoke_args(tiny_data, jit_cache)]
  with workdir_lib.lock(trained):
    assert cli.main(args) == 2
  assert f"locked by pid {os.getpid()}" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_uses_the_absolute_data_dir_stored_in_the_checkpoint(trained, tiny_data, tmp_path,
                                                                      monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)  # relative paths would now point elsewhere
  assert cli.main(["evaluate", "--workdir", str(trained), "--out", "out"]) == 0
  out = capsys.readouterr().out
  assert f"Data: {tiny_data.resolve()} (from the checkpoint)" in out
  # --out: everything goes there, the operating point too; the workdir is not touched
  assert ("Wrote out/metrics.json, out/operating_point.json, out/roc.png, out/calibration.png"
          in out)
  result = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert result["data_dir"] == str(tiny_data.resolve()) and result["count"] == 4


@pytest.mark.parametrize("case", ["workdir_is_a_file", "csv_folder_missing", "empty_folder"])
def test_cli_input_errors_are_one_line(trained, tmp_path, capsys, case):
  empty = tmp_path / "empty"
  empty.mkdir()
  if case == "workdir_is_a_file":
    (tmp_path / "file").write_text("x")
    argv = ["train", "--config", "smoke", "--workdir", str(tmp_path / "file")]
    want, code = f"{tmp_path / 'file'}: is a file, not a directory", 2
  elif case == "csv_folder_missing":
    argv = ["predict", "--workdir", str(trained), "--csv", str(tmp_path / "no" / "p.csv"), str(empty)]
    want, code = f"--csv {tmp_path / 'no' / 'p.csv'}: no such folder", 2
  else:
    argv = ["predict", "--workdir", str(trained), str(empty)]
    want, code = f"{empty}: no image files in this folder", 1
  assert cli.main(argv) == code
  out, err = capsys.readouterr()
  if case == "empty_folder":  # the ERROR line where the predictions are; a count on stderr
    assert f"{empty}  ERROR  no image files in this folder" in out
    assert "1 of 1 file(s) could not be read" in err and str(empty) not in err
  else:
    assert want in err
  assert "Traceback" not in err
  if case == "csv_folder_missing":
    assert out == ""  # refused before anything was predicted


@pytest.mark.slow
def test_dropout_masks_are_folded_with_the_step(tiny_data, jit_cache):
  run = run_lib.build(smoke_config(tiny_data, jit_cache))
  host = jax.device_get(run.state)
  batch = run.steps.shard(_random_batch(5))
  losses = []
  for step in (0, 0, 1):
    state = run.steps.replicate(host.replace(step=np.int32(step)))
    _, m = run.steps.train(state, batch, jax.random.key(0))
    losses.append(float(m["loss"]))
  assert losses[0] == losses[1]  # same step, same masks: the step is deterministic
  assert losses[0] != losses[2]  # next step, new masks


def test_sensitivity_specificity_and_the_threshold_on_asymmetric_data():
  # 3 positives, 5 negatives: sensitivity 2/3, specificity 4/5. A logit of exactly 0 is negative.
  logits = np.array([2.0, 0.5, 0.0, -1.0, -2.0, -0.1, 0.0, 3.0])
  labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
  result = metrics.binary_metrics(logits, labels)
  assert result["sensitivity"] == pytest.approx(2 / 3)
  assert result["specificity"] == pytest.approx(4 / 5)
  assert result["confusion_matrix"] == [[4, 1], [1, 2]]
  assert metrics.predicted_labels(np.array([0.0, 1e-7, -1e-7])).tolist() == [0, 1, 0]


def test_auc_is_computed_from_logits_not_saturated_probabilities():
  logits = np.array([40.0, 50.0, 45.0, -3.0])  # float64 sigmoid: all of the first three are 1.0
  labels = np.array([0, 1, 1, 0])
  assert metrics.sigmoid(logits)[0] == metrics.sigmoid(logits)[1] == 1.0
  assert metrics.binary_metrics(logits, labels)["auc"] == 1.0  # ties would give 0.75


def test_predicted_class_names_follow_the_probability(trained, tiny_data, capsys):
  assert cli.main(["predict", "--workdir", str(trained), "--json", str(tiny_data / "VAL")]) == 0
  result = json.loads(capsys.readouterr().out)
  for p in result["predictions"]:  # at the threshold in use (0.5, or the stored operating point)
    assert p["label"] == ("chest" if p["probability"] > result["threshold"] else "abd"), p


def test_bootstrap_intervals_are_seeded_stratified_and_contain_the_estimate(monkeypatch):
  rng = np.random.default_rng(0)
  labels = np.array([1] * 12 + [0] * 18)
  logits = rng.normal(0, 1, 30) + 1.2 * labels
  point = metrics.binary_metrics(logits, labels)
  intervals = metrics.bootstrap_intervals(logits, labels, seed=3)
  assert intervals == metrics.bootstrap_intervals(logits, labels, seed=3)
  monkeypatch.setattr(metrics, "BOOTSTRAP_CHUNK", 7)  # scored in other chunks: the same draws
  assert intervals == metrics.bootstrap_intervals(logits, labels, seed=3)
  monkeypatch.undo()
  assert intervals != metrics.bootstrap_intervals(logits, labels, seed=4)
  for name in metrics.INTERVAL_METRICS:
    low, high = intervals[name]
    assert low <= point[name] <= high and 0 < high - low < 0.8, name
  # One positive only: stratified resamples keep it, so AUC stays defined (a plain bootstrap
  # would draw resamples without it).
  one = metrics.bootstrap_intervals(np.array([2.0, -1, 0.5, -0.3]), np.array([1, 0, 0, 0]))
  assert one["auc"] == [1.0, 1.0] and one["sensitivity"] == [1.0, 1.0]
  # A perfect result collapses the bootstrap interval; the exact binomial one does not.
  perfect = metrics.binary_metrics(np.array([-2.0] * 5 + [2.0] * 5), np.array([0] * 5 + [1] * 5))
  exact = metrics.exact_intervals(perfect)
  assert exact["accuracy"][0] == pytest.approx(0.6915, abs=1e-4) and exact["accuracy"][1] == 1.0
  assert exact["sensitivity"][0] == pytest.approx(0.4782, abs=1e-4)


def test_calibration_brier_and_expected_calibration_error():
  from sklearn.metrics import brier_score_loss

  probability = np.array([0.05, 0.15, 0.85, 0.95, 0.92, 0.12])
  labels = np.array([0, 1, 1, 1, 0, 0])
  logits = np.log(probability / (1 - probability))
  result = metrics.calibration(logits, labels)
  assert result["brier"] == pytest.approx(brier_score_loss(labels, probability))
  # Bins: [0.0,0.1) {0.05: 0}, [0.1,0.2) {0.15: 1, 0.12: 0}, [0.8,0.9) {0.85: 1}, [0.9,1] {0.95: 1, 0.92: 0}
  expected = (1 * 0.05 + 2 * abs(0.135 - 0.5) + 1 * 0.15 + 2 * abs(0.935 - 0.5)) / 6
  assert result["ece"] == pytest.approx(expected)
  assert [b["count"] for b in result["bins"]] == [1, 2, 1, 2]


def test_operating_point_youden_and_target_sensitivity():
  logits = np.array([-3.0, -2.0, -1.0, 0.5, 1.0, 2.0, -1.5, 0.8, 3.0])
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1])
  youden = metrics.operating_point(logits, labels)
  # Best J: between 0.8 and 1.0, sensitivity 3/4 and specificity 5/5 (J = 0.75).
  assert youden["threshold_logit"] == pytest.approx(0.9)
  assert (youden["sensitivity"], youden["specificity"]) == (0.75, 1.0)
  at = metrics.binary_metrics(logits, labels, youden["threshold_logit"])
  assert (at["sensitivity"], at["specificity"]) == (0.75, 1.0)
  # Every positive found: the highest threshold reaching sensitivity 1 lies below -1.5.
  full = metrics.operating_point(logits, labels, target_sensitivity=1.0)
  assert full["threshold_logit"] == pytest.approx(-1.75) and full["sensitivity"] == 1.0
  assert full["specificity"] == pytest.approx(2 / 5)
  assert full["threshold"] == pytest.approx(1 / (1 + np.exp(1.75)))


def test_evaluate_reports_intervals_calibration_and_the_operating_point_predict_uses(
    trained, tiny_data, tmp_path, capsys):
  workdir = _copy_run(trained, tmp_path)
  assert cli.main(["evaluate", "--workdir", str(workdir), "--target-sensitivity", "1"]) == 0
  out = capsys.readouterr().out
  assert "AUC " in out and "(95% CI " in out and "Brier score" in out
  assert "operating point (sensitivity >= 1, chosen on VAL" in out
  result = json.loads((workdir / "metrics.json").read_text())
  assert set(result["intervals"]) == {"auc", "accuracy", "sensitivity", "specificity"}
  assert (workdir / "calibration.png").stat().st_size > 10_000
  point = json.loads((workdir / "operating_point.json").read_text())
  assert point["sensitivity"] == 1.0 and result["operating_point"]["threshold"] == point["threshold"]
  # predict uses the stored threshold unless --threshold is given.
  assert cli.main(["predict", "--workdir", str(workdir), "--json", str(tiny_data / "VAL")]) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out)["threshold"] == point["threshold"]
  assert "operating_point.json (sensitivity >= 1)" in captured.err
  assert cli.main(["predict", "--workdir", str(workdir), "--json", "--threshold", "0.999999",
                   str(tiny_data / "VAL")]) == 0
  forced = json.loads(capsys.readouterr().out)
  assert forced["threshold"] == 0.999999
  for p in forced["predictions"]:
    assert p["label"] == ("chest" if p["probability"] > 0.999999 else "abd")
  for bad in (["--threshold", "1.5"], ["--threshold", "0"]):
    assert cli.main(["predict", "--workdir", str(workdir), *bad, str(tiny_data / "VAL")]) == 2
    assert "--threshold" in capsys.readouterr().err
  assert cli.main(["evaluate", "--workdir", str(workdir), "--target-sensitivity", "2"]) == 2
  assert "--target-sensitivity 2.0: expected 0 < value <= 1" in capsys.readouterr().err


def test_an_operating_point_belongs_to_one_checkpoint_and_one_validation_set(trained, tiny_data,
                                                                             tmp_path, capsys):
  import shutil

  workdir = _copy_run(trained, tmp_path)
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "2"]) == 0
  point = json.loads((workdir / "operating_point.json").read_text())
  assert (point["epoch"], point["checkpoint"]) == (2, "2")
  assert point["data_dir"] == str(tiny_data.resolve())
  stored = (workdir / "operating_point.json").read_bytes()
  # Another checkpoint's predictions are not decided at it: 0.5, and the reason is given.
  capsys.readouterr()
  val = str(tiny_data / "VAL")
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "1", "--json", val]) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out)["threshold"] == 0.5
  assert ("operating_point.json was chosen for the checkpoint of epoch 2, not this one (epoch 1)"
          in captured.err)
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "2", "--json", val]) == 0
  assert json.loads(capsys.readouterr().out)["threshold"] == point["threshold"]
  # Another split of the same checkpoint is reported at the stored point: its counts at that
  # logit, and each proportion's exact interval of those counts.
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "2", "--split", "train",
                   "--out", str(tmp_path / "train")]) == 0
  reported = json.loads((tmp_path / "train" / "metrics.json").read_text())["operating_point"]
  trained_run = run_lib.load(workdir, "2")
  pipeline = files.Pipeline(listing.list_folders(tiny_data, splits=("train",)), trained_run.config)
  logits, labels = trained_run.steps.logits_of(
      trained_run.variables, pipeline.eval_batches("train", trained_run.config.eval_batch_size))
  called = logits > point["threshold_logit"]
  tn, fp = int(np.sum(~called & (labels == 0))), int(np.sum(called & (labels == 0)))
  fn, tp = int(np.sum(~called & (labels == 1))), int(np.sum(called & (labels == 1)))
  assert reported["on_this_split"]["confusion_matrix"] == [[tn, fp], [fn, tp]]
  from scipy.stats import binomtest

  for name, (k, n) in {"accuracy": (tn + tp, 10), "sensitivity": (tp, tp + fn),
                       "specificity": (tn, tn + fp)}.items():
    ci = binomtest(k, n).proportion_ci(0.95, "exact")
    assert reported["exact_intervals"][name] == pytest.approx([ci.low, ci.high]), name
  # Other data: with --out the point goes there and the workdir is untouched...
  other = pathlib.Path(shutil.copytree(tiny_data, tmp_path / "other"))
  elsewhere = tmp_path / "elsewhere"
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "2", "--data",
                   str(other), "--out", str(elsewhere)]) == 0
  assert (workdir / "operating_point.json").read_bytes() == stored
  assert json.loads((elsewhere / "operating_point.json").read_text())["data_dir"] == \
      str(other.resolve())
  # ... without it, the point chosen on other data is stored nowhere, and that is said.
  capsys.readouterr()
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "2", "--data",
                   str(other)]) == 0
  assert (workdir / "operating_point.json").read_bytes() == stored
  assert "chosen on other data than the run's own: not stored (pass --out" in capsys.readouterr().out


def test_a_threshold_between_saturated_logits_decides_in_predict_as_in_evaluate(
    monkeypatch, tiny_data, tmp_path):
  """Logits 40 and 41: their probabilities are 1.0 in float64, so only the stored logit can
  separate them, as evaluate's figures did."""
  import types


  logits, labels = np.array([40.0, 40.0, 41.0, 41.0]), np.array([0, 0, 1, 1])
  point = metrics.operating_point(logits, labels)
  assert point["threshold_logit"] == 40.5 and point["threshold"] == 1.0
  assert metrics.binary_metrics(logits, labels, point["threshold_logit"])["accuracy"] == 1.0
  (tmp_path / decisions.OPERATING_POINT).write_text(json.dumps({**point, "epoch": 3}))
  threshold, threshold_logit, _ = decisions.decision_threshold(tmp_path, meta={"epoch": 3})
  assert threshold_logit == 40.5

  class Steps:
    def logits_of(self, variables, batches):
      (batch,) = batches
      return logits[:int(batch["mask"].sum())], None

  config = config_lib.load_config(REPO / "configs" / "smoke.py", device_count=1)
  fake = types.SimpleNamespace(config=config, class_names=["abd", "chest"], task="binary",
                               steps=Steps(), variables=None)
  monkeypatch.setattr(run_lib, "load", lambda workdir, which: fake)
  files = sorted((tiny_data / "VAL" / "abd").glob("*.png")) + \
      sorted((tiny_data / "VAL" / "chest").glob("*.png"))
  results, _ = scoring.predict_files(tmp_path, files, threshold=threshold,
                                     threshold_logit=threshold_logit)
  assert [r.label for r in results] == ["abd", "abd", "chest", "chest"]


@pytest.mark.slow
def test_predict_with_test_time_augmentation(trained, tiny_data, capsys):
  import copy


  val = tiny_data / "VAL"
  plain, _ = scoring.predict_files(trained, [val], "latest")
  off = copy.deepcopy(run_lib.load(trained, "latest").config.augment)
  off.enabled = False
  same, _ = scoring.predict_files(trained, [val], "latest", tta=3, augment_config=off)
  # No augmentation: 3 copies of the plain input, scored in one batch of 4 as the 4 films are;
  # other neighbours in the batch: held to the model's own batch-shape spread.
  logits_at, run = run_logits_at(trained, "latest")
  inputs = np.stack([preprocess.film_input(images.read_image(r.path), run.config, False)
                     for r in plain])
  spread = batch_spread(logits_at, inputs, (1, 4))
  for a, b, own in zip(plain, same, spread, strict=True):
    assert_within_spread(b.probability, a.probability, own)
    assert b.probability_sd <= 2 * own + ROUNDING_FLOOR  # the copies' spread: rounding only
  args = ["predict", "--workdir", str(trained), "--checkpoint", "latest", "--json", "--tta", "4"]
  runs = []
  for seed in ("0", "0", "1"):
    assert cli.main(args + ["--seed", seed, str(val)]) == 0
    runs.append([(p["probability"], p["probability_sd"])
                 for p in json.loads(capsys.readouterr().out)["predictions"]])
  assert runs[0] == runs[1] and runs[0] != runs[2]  # seeded
  assert any(sd > 1e-4 for _, sd in runs[0])  # the augmented copies really differ
  assert cli.main(["predict", "--workdir", str(trained), "--tta", "-1", str(val)]) == 2
  assert "--tta -1: expected" in capsys.readouterr().err


def test_resampled_metrics_equal_binary_metrics_of_each_resample():
  """The vectorised bootstrap scores each resample as `binary_metrics` (scikit-learn) does."""
  rng = np.random.default_rng(1)
  labels = np.array([1] * 9 + [0] * 14)
  logits = np.round(rng.normal(0, 1, 23) + labels, 1)  # rounded: ties, which AUC counts as 1/2
  index = rng.integers(0, 23, (50, 23))
  index[0] = np.arange(23)
  index[1] = np.flatnonzero(labels == 0)[rng.integers(0, 14, 23)]  # no positive: AUC undefined
  batch = metrics._resampled_metrics(logits[index], labels[index], 0.3)
  for r in range(50):
    expected = metrics.binary_metrics(logits[index[r]], labels[index[r]], 0.3)
    for name in metrics.INTERVAL_METRICS:
      np.testing.assert_allclose(batch[name][r], expected[name], rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("logits,same", [([-2.0, -1.0, 1.0, 2.0], True),
                                         ([-2.0, 0.5, 1.0, 2.0], False)])
def test_evaluate_prints_the_operating_points_table_only_when_its_decisions_differ(logits, same):
  """At a Youden point between the scores, [-2, -1 | 1, 2] is decided as at 0.5: one table; with
  0.5 (p 0.62, an abdomen film) below the point, 0.5 and the point disagree: two tables."""

  logits, labels = np.array(logits), np.array([0, 0, 1, 1])
  result = {**metrics.binary_metrics(logits, labels), "split": "val", "epoch": 3,
            "data_dir": "D", "data_dir_from": "--data", "class_names": ["abd", "chest"],
            "intervals": metrics.bootstrap_intervals(logits, labels),
            "calibration": metrics.calibration(logits, labels)}
  result["exact_intervals"] = metrics.exact_intervals(result)
  point = {**metrics.operating_point(logits, labels), "epoch": 3}
  at = metrics.binary_metrics(logits, labels, point["threshold_logit"])
  result["operating_point"] = {**point, "on_this_split": at, "exact_intervals":
                               metrics.exact_intervals(at), "intervals":
                               metrics.bootstrap_intervals(logits, labels,
                                                           point["threshold_logit"])}
  from radjax.commands import evaluate

  text = evaluate.format_metrics(result)
  assert text.count("confusion matrix") == 1
  rows = re.findall(r"^\s+abd\s+\d+\s+\d+$", text, flags=re.MULTILINE)  # a matrix's abd row
  assert len(rows) == (1 if same else 2)
  assert ("the same decisions as at 0.5" in text) == same
