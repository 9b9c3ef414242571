"""Three classes: the softmax head trains, and evaluate, predict and explain report every class."""

import csv
import json
import pathlib

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import (ROUNDING_FLOOR, assert_intervals_close, assert_within_spread, batch_spread,
                      run_and_export_spread, run_logits_at)
from radjax.commands import cli
from radjax.metrics import classification as metrics
from radjax.metrics.probabilities import softmax
from radjax.training import checkpoints, losses, run as run_lib, steps, task
from radjax.errors import UserError
from radjax.training import evaluation, explanation, scoring

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("blank", "bottom_right", "top_left")  # sorted: label order


def _three_marker_dataset(root: pathlib.Path, size: int = 75, per_class=(20, 4), seed: int = 0):
  """Noise films; a dark square in the bottom right corner, a bright one in the top left, or none
  decides the class. (With squares of one grey told apart by place alone, 10 films a class and 2
  epochs learned nothing for seed 2 of 0-4, val loss 1.19 against chance's 1.10; distinct greys
  at 10 a class and 3 epochs, 18 steps, still nothing for seed 4.)"""
  from conftest import marker_dataset

  return marker_dataset(root, {"blank": None, "bottom_right": (size - 25, size - 25, 20, 0),
                               "top_left": (5, 5, 20, 255)}, size, per_class, seed)


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory, learning_seed):
  import contextlib
  import io

  from conftest import train_smoke

  data = _three_marker_dataset(tmp_path_factory.mktemp("three"), seed=learning_seed)
  workdir = tmp_path_factory.mktemp("run") / "three"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train_smoke(data, workdir, "--config.image_size=75", "--config.num_epochs=3",
                "--config.batch_size=5", "--config.learning_rate=0.001",
                "--config.augment.enabled=false", f"--config.seed={learning_seed}")
  return data, workdir, out.getvalue()


def test_the_task_follows_from_the_classes_unless_named():
  assert task.resolve("auto", ["a", "b"], "d") == "binary"
  assert task.resolve("auto", ["a", "b", "c"], "d") == "multiclass"
  assert task.resolve("multiclass", ["a", "b"], "d") == "multiclass"  # softmax over two: allowed
  with pytest.raises(UserError, match="d: --config.task=binary needs exactly two classes, found 3"):
    task.resolve("binary", ["a", "b", "c"], "d")
  with pytest.raises(UserError, match="needs at least two"):
    task.resolve("auto", ["a"], "d")
  assert task.num_outputs("binary", "ab") == 1 and task.num_outputs("multiclass", "abc") == 3


def test_multiclass_metrics_match_scikit_learn_per_class_and_macro():
  rng = np.random.default_rng(3)
  labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
  logits = rng.normal(size=(10, 3)) + 2.0 * np.eye(3)[labels]
  got = metrics.multiclass_metrics(logits, labels)
  probabilities = metrics.softmax(logits)
  predicted = probabilities.argmax(1)
  assert got["confusion_matrix"] == skm.confusion_matrix(labels, predicted).tolist()
  assert got["accuracy"] == skm.accuracy_score(labels, predicted)
  assert got["loss"] == pytest.approx(skm.log_loss(labels, probabilities))
  for c in range(3):
    assert got["per_class"][c]["auc"] == pytest.approx(skm.roc_auc_score(labels == c,
                                                                         probabilities[:, c]))
    assert got["per_class"][c]["sensitivity"] == pytest.approx(
        skm.recall_score(labels == c, predicted == c))
    assert got["per_class"][c]["specificity"] == pytest.approx(
        skm.recall_score(labels != c, predicted != c))
  assert got["auc"] == pytest.approx(skm.roc_auc_score(labels, probabilities, multi_class="ovr"))
  # A class absent from the labels has no AUC; the macro mean is over the others.
  two = metrics.multiclass_metrics(logits[labels < 2], labels[labels < 2])
  assert np.isnan(two["per_class"][2]["auc"])
  assert two["auc"] == pytest.approx(np.mean([two["per_class"][c]["auc"] for c in (0, 1)]))
  # Saturated probabilities stay ranked: AUC is computed on log-odds.
  saturated = metrics.multiclass_metrics(np.array([[0, 50, 0], [0, 60, 0], [0, 0, 70.0]]),
                                         np.array([0, 1, 2]))
  assert saturated["per_class"][1]["auc"] == 1.0


def test_macro_bootstrap_intervals_resample_the_figures_of_multiclass_metrics():
  rng = np.random.default_rng(4)
  labels = np.repeat([0, 1, 2], [6, 9, 5])
  logits = rng.normal(size=(20, 3)) + 1.5 * np.eye(3)[labels]
  logits[3] = logits[4]  # a tie, counted one half as scikit-learn counts it
  # Scoring the resamples together gives each resample's `multiclass_metrics` macro figures.
  index = np.stack([np.arange(20), rng.integers(0, 20, 20), np.r_[0:6, 6:15, 15, 15, 16, 17, 18]])
  scored = metrics._resampled_macro_metrics(logits[index], labels[index])
  for r, rows in enumerate(index):
    want = metrics.multiclass_metrics(logits[rows], labels[rows])
    for key in metrics.INTERVAL_METRICS:
      assert scored[key][r] == pytest.approx(want[key], nan_ok=True), (r, key)
  intervals = metrics.multiclass_bootstrap_intervals(logits, labels, seed=1)
  point = metrics.multiclass_metrics(logits, labels)
  for key, (low, high) in intervals.items():
    assert low < point[key] < high, key  # 20 images: wide, around the figure
  assert intervals == metrics.multiclass_bootstrap_intervals(logits, labels, seed=1)  # seeded
  # Accuracy's exact binomial interval: 13 right of 20, say, is scipy's Clopper-Pearson one.
  from scipy.stats import binomtest

  right = int(np.trace(point["confusion_matrix"]))
  ci = binomtest(right, 20).proportion_ci(0.95, "exact")
  assert metrics.exact_intervals(point) == {"accuracy": pytest.approx([ci.low, ci.high])}


def test_softmax_cross_entropy_in_the_train_step_loss():
  import jax.numpy as jnp

  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
  labels = jnp.array([0, 2])
  expected = -np.log(metrics.softmax(np.asarray(logits))[[0, 1], [0, 2]])
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)
  np.testing.assert_array_equal(steps.predicted_class(logits), [0, 1])
  np.testing.assert_array_equal(steps.predicted_class(jnp.array([0.0, 0.1])), [0, 1])


@pytest.mark.slow
def test_three_class_folders_train_a_softmax_head_that_learns_the_markers(three_class_run,
                                                                          record_property):
  _, workdir, console = three_class_run
  assert "Task: multiclass (3 classes, softmax over their logits)" in console
  assert "Validation at epoch 3 (12 images, the most probable class)" in console
  assert all(f"  {c}" in console for c in CLASSES)  # a line per class
  history = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  record_property("val_accuracy", history[-1]["val_accuracy"])
  record_property("val_loss", history[-1]["val_loss"])
  # Over --learning-seed 0-4 (scripts/learning_margins.py) the last epoch gave val accuracy 1.0
  # on four seeds and 8 of 12 on seed 3, val loss 0.00-0.04 and 0.63 (the last epoch swings at
  # this learning rate). A network that learned nothing sits at chance: 1/3 and ln 3 = 1.10.
  assert history[-1]["val_accuracy"] >= 0.5, history[-1]  # 12 images, 4 per class
  assert history[-1]["val_loss"] < 0.9, history[-1]
  trained = run_lib.load(workdir, "latest")
  assert trained.task == "multiclass" and trained.class_names == list(CLASSES)
  assert trained.model.num_outputs == 3
  assert checkpoints.task_of(workdir, "latest") == "multiclass"


@pytest.mark.slow
def test_evaluate_reports_each_class_and_the_confusion_matrix(three_class_run, tmp_path, capsys):
  data, workdir, _ = three_class_run
  out = tmp_path / "eval"
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--out", str(out)]) == 0
  text = capsys.readouterr().out
  result = json.loads((out / "metrics.json").read_text())
  assert result["task"] == "multiclass" and result["count"] == 12
  matrix = np.array(result["confusion_matrix"])
  assert matrix.shape == (3, 3) and matrix.sum() == 12 and list(matrix.sum(1)) == [4, 4, 4]
  assert result["accuracy"] == pytest.approx(np.trace(matrix) / 12)
  # The per-class AUCs are scikit-learn's on the run's own logits.
  trained = run_lib.load(workdir, "latest")
  from radjax.data import datasets

  pipeline = datasets.open_pipeline(data, trained.config, splits=("val",))
  logits, labels = trained.steps.logits_of(trained.variables, pipeline.eval_batches("val", 8))
  assert logits.shape == (12, 3)
  for c, name in enumerate(CLASSES):
    expected = skm.roc_auc_score(labels == c, metrics.softmax(logits)[:, c])
    assert result["per_class"][c]["auc"] == pytest.approx(expected), name
    log_odds = logits[:, c] - np.logaddexp.reduce(np.delete(logits, c, axis=1), axis=1)
    want = metrics.bootstrap_intervals(log_odds, (labels == c).astype(int),
                                       seed=trained.config.seed)["auc"]
    assert result["per_class"][c]["intervals"] == {"auc": pytest.approx(want)}, name
    # Calibration one vs rest: the class' softmax probability against its frequency.
    brier = np.mean((metrics.softmax(logits)[:, c] - (labels == c)) ** 2)
    assert result["per_class"][c]["calibration"]["brier"] == pytest.approx(brier, rel=1e-5), name
    assert f"Brier {brier:.3f} ECE" in text
    assert name in text
  assert "confusion matrix (rows true, columns predicted)" in text
  # The macro figures with their bootstrap intervals, accuracy also with its exact one.
  assert_intervals_close(result["intervals"], metrics.multiclass_bootstrap_intervals(
      logits, labels, seed=trained.config.seed))
  assert set(result["exact_intervals"]) == {"accuracy"}
  low, high = result["intervals"]["auc"]
  assert f"macro AUC {result['auc']:.3f} (95% CI {low:.3f}-{high:.3f})" in text
  assert (out / "roc.png").stat().st_size > 10_000
  assert cli.main(["evaluate", "--workdir", str(workdir), "--target-sensitivity", "0.9",
                   "--out", str(out)]) == 2
  assert "--target-sensitivity" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_prints_every_class_probability_and_the_most_probable(three_class_run, tmp_path,
                                                                      capsys):
  data, workdir, _ = three_class_run
  table = tmp_path / "predictions.csv"
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--csv", str(table), str(data / "VAL")]) == 0
  captured = capsys.readouterr()
  assert "Decision: the most probable class (multiclass run)" in captured.err
  rows = list(csv.DictReader(table.open()))
  assert len(rows) == 12
  assert list(rows[0]) == ["path", *(f"probability_{c}" for c in CLASSES), "class", "error",
                           "probability_sd"]
  for row in rows:
    p = np.array([float(row[f"probability_{c}"]) for c in CLASSES])
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert row["class"] == CLASSES[int(np.argmax(p))]
  line = next(l for l in captured.out.splitlines() if "top_left0.png" in l)
  assert all(f"p({c})=" in line for c in CLASSES)
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "latest", "--json",
                   "--tta", "2", str(data / "VAL" / "top_left")]) == 0
  reply = json.loads(capsys.readouterr().out)
  assert reply["threshold"] is None and len(reply["predictions"]) == 4
  for p in reply["predictions"]:
    assert set(p["probabilities"]) == set(CLASSES)
    assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    assert p["probability"] == p["probabilities"][p["label"]]  # TTA: the mean decides
    assert p["probability_sd"] is not None
  assert cli.main(["predict", "--workdir", str(workdir), "--threshold", "0.3",
                   str(data / "VAL")]) == 2
  assert ("--threshold 0.3: a multiclass run calls the most probable class"
          in capsys.readouterr().err)


@pytest.mark.slow
def test_explain_shows_the_asked_class_and_refuses_an_unknown_one(three_class_run, tmp_path,
                                                                  capsys):
  data, workdir, _ = three_class_run
  trained = run_lib.load(workdir, "latest")
  image = data / "VAL" / "bottom_right" / "bottom_right0.png"
  e = explanation.explain_file(trained, image, layer="mixed2", patch_fraction=0.25)
  assert e.explained == e.label and set(e.probabilities) == set(CLASSES)
  assert e.probability == pytest.approx(max(e.probabilities.values()))
  other = explanation.explain_file(trained, image, layer="mixed2", patch_fraction=0.25,
                               target_class="top_left")
  assert other.explained == "top_left" and not np.allclose(other.gradcam, e.gradcam)
  out = tmp_path / "maps"
  asked = next(c for c in CLASSES if c != e.label)  # another class than the predicted one
  assert cli.main(["explain", "--workdir", str(workdir), "--checkpoint", "latest", "--out",
                   str(out), "--layer", "mixed2", "--class", asked, str(image)]) == 0
  assert f"{e.label}  (maps: evidence for {asked})" in capsys.readouterr().out
  assert (out / "bottom_right0.explain.png").stat().st_size > 20_000
  assert cli.main(["explain", "--workdir", str(workdir), "--out", str(out), "--class", "pelvis",
                   str(image)]) == 2
  assert capsys.readouterr().err.strip() == (
      "radjax explain: error: --class pelvis: not a class of this run "
      "(blank, bottom_right, top_left)")


def _three_film_classes(dataset_dir, root, per_class: int = 4):
  """Unsplit folders of three classes of real, distinct films: abdomens, chests, and other
  chests turned a quarter (cv keeps near duplicates together: the marker films all are)."""
  from PIL import Image

  chests = sorted((dataset_dir / "TRAIN" / "chest").glob("*.png"))
  sources = {"abd": sorted((dataset_dir / "TRAIN" / "abd").glob("*.png"))[:per_class],
             "chest": chests[:per_class], "turned": chests[per_class:2 * per_class]}
  for name, files in sources.items():
    (root / name).mkdir(parents=True)
    for src in files:
      image = Image.open(src)
      (image.transpose(Image.Transpose.ROTATE_90) if name == "turned" else image).save(
          root / name / src.name)
  return root


@pytest.mark.slow
def test_three_classes_cross_validate_with_macro_figures_and_per_class_intervals(
    tmp_path, dataset_dir, jit_cache, capsys):
  import csv as csv_lib

  from radjax.commands import cv
  from radjax.data import folds as folds_lib
  from radjax.training import cross_validation as cv_lib

  data = _three_film_classes(dataset_dir, tmp_path / "d")
  workdir = tmp_path / "cv"
  assert cli.main(["cv", "--config", str(REPO / "configs" / "smoke.py"), "--workdir",
                   str(workdir), "--folds", "2", f"--config.data_dir={data}",
                   "--config.num_epochs=1", "--config.batch_size=5",
                   "--config.augment.enabled=false",
                   f"--config.compilation_cache={jit_cache}"]) == 0
  out = capsys.readouterr().out
  summary = json.loads((workdir / cv.SUMMARY).read_text())
  names = ["abd", "chest", "turned"]
  assert summary["class_names"] == names and summary["images"] == 12
  with (workdir / cv.PREDICTIONS_CSV).open() as f:
    rows = list(csv_lib.DictReader(f))
  assert len(rows) == 12 and set(rows[0]) == {"seed", "fold", "path", "class", "predicted",
                                              *(f"p_{c}" for c in names)}
  probabilities = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
  labels = np.array([names.index(r["class"]) for r in rows])
  np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
  assert [r["predicted"] for r in rows] == [names[i] for i in probabilities.argmax(1)]
  seed = summary["per_seed"]["0"]
  # The pooled macro AUC is the mean of scikit-learn's AUC of each class against the rest, scored
  # by its log-odds (logit minus the log-sum-exp of the others, as radjax documents), of the
  # folds' held-out logits. Not of the probabilities: an untrained model's are nearly equal, and
  # which of them tie in float rounding differs between CPUs (AMD vs Intel AMX).
  held = [json.loads((workdir / folds_lib.fold_name(0, k) / cv_lib.HELD_OUT).read_text()) for k in (1, 2)]
  held_logits = np.concatenate([h["logits"] for h in held]).astype(np.float64)
  held_labels = np.concatenate([h["labels"] for h in held])
  assert held_logits.shape == (12, 3)
  log_odds = [held_logits[:, c] - np.logaddexp.reduce(np.delete(held_logits, c, 1), axis=1)
              for c in range(3)]
  assert seed["pooled"]["auc"] == pytest.approx(np.mean(
      [skm.roc_auc_score(held_labels == c, log_odds[c]) for c in range(3)]))
  assert seed["pooled"]["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
  assert np.array(seed["pooled"]["confusion_matrix"]).shape == (3, 3)
  assert set(seed["intervals"]) == {"auc", "accuracy", "sensitivity", "specificity"}
  assert set(seed["exact_intervals"]) == {"accuracy"}
  assert [m["count"] for m in seed["per_class"]] == [4, 4, 4]
  assert all(set(m["intervals"]) == {"auc"} for m in seed["per_class"])
  assert "Out-of-fold pooled macro one-vs-rest ROC AUC" in out and "  turned  AUC" in out
  assert (workdir / cv.ROC_FIGURE).stat().st_size > 10_000


def test_a_run_resumes_only_as_its_own_task(monkeypatch, tmp_path):
  from radjax.training import loop as train

  class Manager:
    def latest_step(self):
      return 3

  monkeypatch.setattr(checkpoints, "read_meta", lambda mngr, epoch: {"config": {}})
  train._check_task(Manager(), "binary", tmp_path)  # written before tasks: binary
  with pytest.raises(UserError, match="cannot resume a binary run as multiclass"):
    train._check_task(Manager(), "multiclass", tmp_path)
  monkeypatch.setattr(checkpoints, "read_meta", lambda mngr, epoch: {"task": "multiclass"})
  train._check_task(Manager(), "multiclass", tmp_path)
  # Heads of one shape restore into each other: the task in the restored metadata refuses.
  with pytest.raises(UserError, match="cannot resume a multilabel run as multiclass"):
    train._refuse_other_task("multilabel", "multiclass", tmp_path)


@pytest.mark.slow
def test_stress_flips_are_changes_of_the_most_probable_class(three_class_run, tmp_path,
                                                             record_property):
  """The clean row is evaluate's macro figures; the inverted films' flips are the files whose
  predicted class changes when the inverted films are predicted."""
  from PIL import Image

  from radjax.data import images

  data, workdir, _ = three_class_run
  assert cli.main(["stress", "--workdir", str(workdir), "--checkpoint", "latest", "--families",
                   "marker,invert", "--out", str(tmp_path / "out")]) == 0
  result = json.loads((tmp_path / "out" / "stress.json").read_text())
  assert result["task"] == "multiclass" and len(result["images"]) == 12
  clean = result["conditions"][0]
  evaluated = evaluation.evaluate_workdir(workdir, which="latest", out_dir=tmp_path / "eval")
  assert clean["auc"] == pytest.approx(evaluated["auc"])
  assert clean["accuracy"] == pytest.approx(evaluated["accuracy"])
  inverted = tmp_path / "inverted"
  inverted.mkdir()
  for k, path in enumerate(result["images"]):
    Image.fromarray((255 - images.read_image(path)).astype(np.uint8)).save(inverted / f"{k}.png")
  before = scoring.predict_files(workdir, result["images"], "latest")[0]
  after = {r.path: r for r in scoring.predict_files(workdir, [inverted], "latest")[0]}
  after = [after[str(inverted / f"{k}.png")] for k in range(12)]
  row = next(r for r in result["conditions"] if r["family"] == "invert")
  record_property("inverted_flips", sum(row["image_flips"]))
  # stress and predict batch these films differently: decisions are compared where the two most
  # probable classes lie further apart than the model's own batch-shape spread (conftest).
  logits_at, trained = run_logits_at(workdir)
  from radjax.data import preprocess

  inputs = np.stack([preprocess.film_input(pixels, trained.config, False) for pixels in
                     [images.read_image(p) for p in result["images"]]
                     + [images.read_image(inverted / f"{k}.png") for k in range(12)]])
  spread = batch_spread(logits_at, inputs, (1, 12, 16), scores=softmax).max(axis=1)
  clear = []
  for k, (a, b) in enumerate(zip(before, after)):
    gaps = [np.diff(sorted(r.probabilities.values()))[-1] for r in (a, b)]
    if min(gaps) > 2 * max(spread[k], spread[12 + k]) + ROUNDING_FLOOR:
      clear.append(k)
      assert row["image_flips"][k] == float(a.label != b.label), (k, a, b)
  assert len(clear) >= 10  # of 12: only a film at a near tie is left out
  # Inverted, the dark square turns bright and the bright one dark: 4-8 of the 12 decisions
  # changed over --learning-seed 0-4.
  assert sum(row["image_flips"]) >= 1


@pytest.mark.slow
def test_an_export_of_a_three_class_run_answers_as_predict_and_the_page_do(three_class_run,
                                                                           tmp_path, capsys):
  """Softmax over three classes and the most probable one, from the export as from the run."""
  from starlette.testclient import TestClient

  from radjax.commands import serve

  data, workdir, _ = three_class_run
  model = tmp_path / "three.radjax"
  assert cli.main(["export", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--out", str(model)]) == 0
  meta = json.loads((model / "radjax.json").read_text())
  assert meta["task"] == "multiclass" and meta["class_names"] == list(CLASSES)
  assert set(meta["operating_point"]) == {"rule"}
  capsys.readouterr()
  val = str(data / "VAL")
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "latest", "--json",
                   val]) == 0
  from_run = json.loads(capsys.readouterr().out)
  assert cli.main(["predict", "--model", str(model), "--json", val]) == 0
  from_model = json.loads(capsys.readouterr().out)
  assert len(from_model["predictions"]) == 12
  # predict batches the 12 films in one batch of 16 from the run, the export in one of 12; the
  # page scores one at a time: held to the model's own spread over those batch shapes.
  paths = [p["path"] for p in from_run["predictions"]]
  spread = run_and_export_spread(workdir, model, paths, (1, 12, 16), scores=softmax)
  for a, b, own in zip(from_run["predictions"], from_model["predictions"], spread, strict=True):
    assert a["path"] == b["path"] and a["label"] == b["label"]
    assert_within_spread([b["probabilities"][c] for c in CLASSES],
                         [a["probabilities"][c] for c in CLASSES], own)
    assert sum(b["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)  # float32 softmax
  first = from_run["predictions"][0]
  with TestClient(serve.make_app(serve.Reader(model=model))) as client:
    answer = client.post("/predict", params={"name": "film.png"},
                         content=pathlib.Path(first["path"]).read_bytes()).json()
  assert answer["error"] is None and answer["decision"] == first["label"]
  assert_within_spread([answer["probabilities"][c] for c in CLASSES],
                       [first["probabilities"][c] for c in CLASSES], spread[0])
  assert answer["rule"] == "the most probable class"
