"""Several findings per image: a CSV with one 1/0/blank column per label trains K sigmoid logits,
unknown labels are masked out of the loss and the metrics, and evaluate, predict and explain
report every label."""

import contextlib
import csv
import io
import json
import pathlib
import shutil

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import assert_intervals_close, assert_within_spread, run_and_export_spread
from radjax.commands import cli
from radjax.data import listing
from radjax.metrics import classification as metrics
from radjax.training import checkpoints, losses, run as run_lib, steps, task
from radjax.errors import UserError
from radjax.training import evaluation, explanation, scoring

LABELS = ("top_left", "bottom_right", "centre")  # CSV column order is label order
SIZE = 75
MARKERS = {"top_left": (5, 5), "bottom_right": (SIZE - 25, SIZE - 25), "centre": (27, 27)}
# Each finding looks different (bright, dark, striped), so that after global average pooling a
# network trained from scratch for a few steps tells them apart on any CPU's rounding, not only
# where they are.
PATTERNS = {"top_left": 255, "bottom_right": 0, "centre": np.tile([0, 0, 255, 255], 5)}


def _write_multilabel_csv(root, per_split=(36, 12), blank_every=7, seed=1):
  """Noise films with an independent random subset of three squares (bright, dark, striped); the
  CSV has a column per square. Every `blank_every`-th cell is unknown (blank, or CheXpert's -1)."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  rows, cell = [], 0
  for split, n in zip(("train", "val"), per_split):
    for k in range(n):
      present = rng.random(3) < 0.5
      image = rng.integers(40, 140, (SIZE, SIZE)).astype(np.uint8)
      for on, name in zip(present, LABELS):
        if on:
          top, left = MARKERS[name]
          image[top:top + 20, left:left + 20] = PATTERNS[name]
      name = f"{split}{k}.png"
      Image.fromarray(image).save(root / name)
      values = []
      for on in present:
        cell += 1
        values.append(("" if cell % 2 else "-1") if cell % blank_every == 0 else str(int(on)))
      rows.append([name, split, *values])
  manifest = root / "findings.csv"
  with manifest.open("w", newline="") as f:
    csv.writer(f).writerows([["path", "split", *LABELS], *rows])
  return manifest


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, learning_seed):
  from conftest import train_smoke

  root = tmp_path_factory.mktemp("findings")
  # 12 steps an epoch: see below. Seed 0 of --learning-seed draws the data of seed 1, as before.
  manifest = _write_multilabel_csv(root, per_split=(72, 12), seed=1 + learning_seed)
  workdir = tmp_path_factory.mktemp("run") / "multilabel"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train_smoke(manifest, workdir, f"--config.image_size={SIZE}", "--config.num_epochs=3",
                "--config.batch_size=6", "--config.learning_rate=0.001",
                "--config.augment.enabled=false", f"--config.seed={learning_seed}")
  return manifest, workdir, out.getvalue()


def _manifest_labels(manifest, split):
  rows = [r for r in csv.DictReader(manifest.open()) if r["split"] == split]
  return np.array([[listing.MULTILABEL_VALUES[r[n]] for n in LABELS] for r in rows])


def test_a_label_column_per_finding_lists_as_multilabel_with_unknowns(tmp_path):
  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  folders = listing.list_manifest(manifest)
  assert folders.multilabel and folders.class_names == list(LABELS)
  labels = np.array([e.label for e in sorted(folders.splits["train"], key=lambda e: e.path)])
  assert labels.shape == (12, 3) and set(np.unique(labels)) == {-1, 0, 1}
  by_name = {e.path.rsplit("/", 1)[-1]: e.label for e in folders.splits["train"]}
  rows = {r["path"]: r for r in csv.DictReader(manifest.open())}
  for name, label in by_name.items():  # blank and -1 are unknown (-1), the rest as written
    assert label == tuple(listing.MULTILABEL_VALUES[rows[name][n]] for n in LABELS)
  counts = folders.counts()
  assert counts["train"] == {n: int(np.sum(labels[:, i] == 1)) for i, n in enumerate(LABELS)}


def test_export_and_prepare_report_images_not_summed_labels(tmp_path):
  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  assert cli._image_counts(listing.list_manifest(manifest)) == "train 12, val 4"


@pytest.mark.parametrize("edit,message", [
    (lambda rows: rows[1].__setitem__(2, "yes"),
     "findings.csv:2: top_left is 'yes'; a label column holds 1, 0, or blank or -1 (unknown)"),
    (lambda rows: [r.__setitem__(3, "0") for r in rows[1:] if r[1] == "train"],
     "no readable image with bottom_right=1 in split train; every label needs positive and "
     "negative training images"),
    (lambda rows: [r.__delitem__(slice(3, 5)) for r in rows],
     "needs the columns path and label (or class), or path and one 1/0/blank column per label "
     "(two or more); found path, split, top_left"),
])
def test_bad_multilabel_manifests_are_one_line_naming_the_row_or_label(tmp_path, edit, message):
  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  rows = list(csv.reader(manifest.open()))
  edit(rows)
  with manifest.open("w", newline="") as f:
    csv.writer(f).writerows(rows)
  with pytest.raises(UserError) as info:
    listing.list_manifest(manifest, validate=False)
  assert str(info.value).startswith(str(manifest)) and "\n" not in str(info.value)
  assert message in str(info.value)


def test_the_task_is_multilabel_exactly_when_the_data_is():
  assert task.resolve("auto", LABELS, "d", multilabel=True) == "multilabel"
  assert task.num_outputs("multilabel", LABELS) == 3
  with pytest.raises(UserError, match="d: one 1/0/blank column per label is multilabel data; "
                                      "--config.task=multiclass needs one label column"):
    task.resolve("multiclass", LABELS, "d", multilabel=True)
  with pytest.raises(UserError, match="d: --config.task=multilabel needs a CSV with one 1/0/blank "
                                      "column per label"):
    task.resolve("multilabel", ["a", "b"], "d")


def test_unknown_labels_are_masked_out_of_the_loss_accuracy_and_metrics():
  import jax.numpy as jnp

  logits = np.array([[2.0, -1.0, 0.5], [-3.0, 1.0, 4.0], [0.2, 0.3, -0.4], [1.5, -2.0, 0.1]])
  labels = np.array([[1, 0, -1], [0, -1, 1], [1, 1, 0], [-1, 0, 1]])
  known = labels >= 0
  bce = np.logaddexp(0, logits) - (labels == 1) * logits
  per_image = (bce * known).sum(1) / known.sum(1)
  np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
                             per_image, rtol=1e-6)
  right = ((logits > 0) == (labels == 1)) & known
  assert float(steps.accuracy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(
      right.sum() / known.sum())
  got = metrics.classification_metrics(logits, labels)
  assert got["loss"] == pytest.approx(per_image.mean())
  assert got["accuracy"] == pytest.approx(right.sum() / known.sum())
  for k in range(3):
    keep = known[:, k]
    y, z = labels[keep, k], logits[keep, k]
    assert got["per_class"][k]["known"] == keep.sum() and got["per_class"][k]["count"] == y.sum()
    assert got["per_class"][k]["auc"] == pytest.approx(skm.roc_auc_score(y, z))
    assert got["per_class"][k]["sensitivity"] == pytest.approx(skm.recall_score(y, z > 0))
    assert got["per_class"][k]["specificity"] == pytest.approx(skm.recall_score(1 - y, z <= 0))
  assert got["auc"] == pytest.approx(np.mean([m["auc"] for m in got["per_class"]]))
  # A label known in one class only has no AUC; the macro mean is over the others.
  labels[:, 2] = [1, 1, -1, 1]
  one_sided = metrics.multilabel_metrics(logits, labels)
  assert np.isnan(one_sided["per_class"][2]["auc"])
  assert one_sided["auc"] == pytest.approx(np.mean([one_sided["per_class"][k]["auc"]
                                                    for k in (0, 1)]))


def test_macro_bootstrap_intervals_resample_whole_images_with_their_known_labels():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 2, (24, 3))
  labels[rng.random((24, 3)) < 0.2] = -1  # unknown cells
  logits = rng.normal(size=(24, 3)) + 1.0 * (labels == 1)
  logits[5, 0] = logits[6, 0]  # a tie
  index = np.stack([np.arange(24), rng.integers(0, 24, 24), rng.integers(0, 24, 24),
                    np.r_[[0] * 12, [1] * 12]])  # the last: two images, a label undefined
  scored = metrics._resampled_multilabel_metrics(logits[index], labels[index])
  for r, rows in enumerate(index):
    want = metrics.multilabel_metrics(logits[rows], labels[rows])
    for key in metrics.INTERVAL_METRICS:
      assert scored[key][r] == pytest.approx(want[key], nan_ok=True), (r, key)
  intervals = metrics.multilabel_bootstrap_intervals(logits, labels, seed=2)
  point = metrics.multilabel_metrics(logits, labels)
  for key, (low, high) in intervals.items():
    assert low <= point[key] <= high and low < high, key
  assert intervals == metrics.multilabel_bootstrap_intervals(logits, labels, seed=2)


@pytest.mark.slow
def test_a_findings_csv_trains_three_sigmoid_logits_that_learn_the_squares(multilabel_run,
                                                                           record_property):
  _, workdir, console = multilabel_run
  assert "Task: multilabel (3 labels, a sigmoid logit each; unknown labels masked)" in console
  assert "Validation at epoch 3 (12 images, each label at probability 0.5)" in console
  assert all(f"  {n}" in console for n in LABELS) and "known)" in console
  history = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  # Chance is a loss of ln 2 = 0.69 per label and an AUC of 0.5. Over --learning-seed 0-4
  # (scripts/learning_margins.py), the last epoch's val loss was 0.07-0.49 and macro AUC 0.81-1.0
  # (the loss swings between epochs at this learning rate), so the margins sit below the worst
  # seed with room and well above chance.
  record_property("val_loss", history[-1]["val_loss"])
  record_property("val_auc", history[-1]["val_auc"])
  assert history[-1]["val_loss"] < 0.6 and history[-1]["val_auc"] >= 0.7, history[-1]
  trained = run_lib.load(workdir, "latest")
  assert trained.task == "multilabel" and trained.class_names == list(LABELS)
  assert trained.model.num_outputs == 3
  assert checkpoints.task_of(workdir, "latest") == "multilabel"


@pytest.mark.slow
def test_evaluate_reports_each_label_over_its_known_images(multilabel_run, tmp_path, capsys):
  manifest, workdir, _ = multilabel_run
  out = tmp_path / "eval"
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--out", str(out)]) == 0
  text = capsys.readouterr().out
  result = json.loads((out / "metrics.json").read_text())
  assert result["task"] == "multilabel" and result["count"] == 12
  truth = _manifest_labels(manifest, "val")
  trained = run_lib.load(workdir, "latest")
  from radjax.data import datasets

  pipeline = datasets.open_pipeline(manifest, trained.config, splits=("val",))
  logits, labels = trained.steps.logits_of(trained.variables, pipeline.eval_batches("val", 5))
  assert logits.shape == (12, 3)
  assert sorted(map(tuple, labels)) == sorted(map(tuple, truth))  # path order vs CSV order
  for k, name in enumerate(LABELS):
    known = labels[:, k] >= 0
    m = result["per_class"][k]
    assert m["known"] == known.sum() < 12 and m["count"] == np.sum(labels[:, k] == 1)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels[known, k], logits[known, k]))
    # Bootstrap intervals over the label's known images, as a binary run's (seeded: reproducible).
    want = metrics.bootstrap_intervals(logits[known, k], labels[known, k],
                                       seed=trained.config.seed)
    assert_intervals_close(m["intervals"], want)
    brier = np.mean((metrics.sigmoid(logits[known, k]) - labels[known, k]) ** 2)  # known only
    # (rel 1e-5: these logits come from batches of 5, evaluate's from its own batch size)
    assert m["calibration"]["brier"] == pytest.approx(brier, rel=1e-5)
    want_calibration = metrics.calibration(logits[known, k], labels[known, k])
    assert m["calibration"]["ece"] == pytest.approx(want_calibration["ece"], rel=1e-5)
    assert [b["count"] for b in m["calibration"]["bins"]] == \
        [b["count"] for b in want_calibration["bins"]]
    low, high = want["auc"]
    assert low <= m["auc"] <= high and f"AUC {m['auc']:.3f} ({low:.3f}-{high:.3f})" in text
    assert f"  {name}" in text
  assert "per label (over the images where it is known)" in text
  assert_intervals_close(result["intervals"], metrics.multilabel_bootstrap_intervals(
      logits, labels, seed=trained.config.seed))
  low, high = result["intervals"]["auc"]
  assert f"macro AUC {result['auc']:.3f} (95% CI {low:.3f}-{high:.3f})" in text
  assert (out / "roc.png").stat().st_size > 10_000


def _val_logits(manifest, workdir):
  from radjax.data import datasets

  trained = run_lib.load(workdir, "latest")
  pipeline = datasets.open_pipeline(manifest, trained.config, splits=("val", "train"))
  return trained, pipeline


@pytest.mark.slow
def test_evaluate_chooses_each_labels_operating_point_on_val(multilabel_run, tmp_path, capsys,
                                                             record_property):
  manifest, workdir, _ = multilabel_run
  trained, pipeline = _val_logits(manifest, workdir)
  workdir = pathlib.Path(shutil.copytree(workdir, tmp_path / "run"))  # evaluate writes into it
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--target-sensitivity", "0.9"]) == 0
  text = capsys.readouterr().out
  point = json.loads((workdir / "operating_point.json").read_text())
  assert point["task"] == "multilabel" and point["rule"] == "sensitivity >= 0.9"
  assert point["epoch"] == 3 and set(point["labels"]) == set(LABELS)
  assert "operating points (sensitivity >= 0.9, each label's own, chosen on VAL at epoch 3)" in text
  # On TRAIN, the points stored from VAL: each label's figures at its own threshold.
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--split", "train", "--out", str(tmp_path / "train")]) == 0
  train_result = json.loads((tmp_path / "train" / "metrics.json").read_text())
  assert json.loads((workdir / "operating_point.json").read_text()) == point  # not re-chosen
  val_result = json.loads((workdir / "metrics.json").read_text())
  thresholds = set()
  for split, result in (("val", val_result), ("train", train_result)):
    logits, labels = trained.steps.logits_of(trained.variables, pipeline.eval_batches(split, 6))
    for k, name in enumerate(LABELS):
      known = labels[:, k] >= 0
      chosen, at = point["labels"][name], result["operating_point"]["on_this_split"][name]
      if split == "val":  # the point is the binary rule over the label's known VAL images
        want = metrics.operating_point(logits[known, k], labels[known, k], 0.9)
        assert chosen["threshold_logit"] == pytest.approx(want["threshold_logit"], abs=1e-4)
        record_property(f"{name}_sensitivity", want["sensitivity"])
        assert chosen["sensitivity"] == want["sensitivity"] and want["sensitivity"] >= 0.9
      called = logits[known, k] > chosen["threshold_logit"]
      truth = labels[known, k] == 1
      assert at["confusion_matrix"] == [[int(np.sum(~called & ~truth)), int(np.sum(called & ~truth))],
                                        [int(np.sum(~called & truth)), int(np.sum(called & truth))]]
      assert at["sensitivity"] == pytest.approx(np.mean(called[truth]))
      low, high = at["intervals"]["specificity"]
      assert low <= at["specificity"] <= high
      thresholds.add(round(chosen["threshold"], 6))
  assert len(thresholds) > 1  # each label its own


def test_a_label_val_holds_one_value_of_keeps_probability_one_half(tmp_path):
  import types

  from radjax.commands import evaluate

  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, (20, 3))
  labels[:, 2] = 1  # VAL holds only positives of the third label
  labels[::5, 0] = -1  # and the first is unknown on a fifth of the images
  logits = rng.normal(size=(20, 3)) + 2.0 * labels
  trained = types.SimpleNamespace(class_names=list(LABELS), epoch=4,
                                  config=types.SimpleNamespace(seed=0))
  result = {"written": ["metrics.json"]}
  binding = {"epoch": 4, "checkpoint": "best", "data_dir": "/data"}
  evaluation._label_operating_points(result, trained, logits, labels, "val", binding, tmp_path,
                                   None, True, None)
  point = json.loads((tmp_path / "operating_point.json").read_text())
  assert point["labels"]["centre"] is None and point["rule"] == "Youden's J"
  assert {k: point[k] for k in binding} == binding  # bound to its checkpoint and data
  known = labels[:, 0] >= 0
  assert point["labels"]["top_left"] == metrics.operating_point(logits[known, 0], labels[known, 0])
  at = result["operating_point"]["on_this_split"]["top_left"]
  called = logits[known, 0] > point["labels"]["top_left"]["threshold_logit"]
  assert at["sensitivity"] == pytest.approx(np.mean(called[labels[known, 0] == 1]))
  assert result["operating_point"]["on_this_split"]["centre"] is None
  assert result["written"] == ["metrics.json", str(tmp_path / "operating_point.json")]
  thresholds = evaluation.label_thresholds(point, LABELS)
  assert thresholds["centre"] == 0.5 and thresholds["top_left"] == point["labels"]["top_left"]["threshold"]
  lines = evaluate._format_label_points(result["operating_point"], LABELS)
  assert "centre" in lines[3] and "probability 0.5 (VAL holds one value of this label" in lines[3]
  assert f"probability {thresholds['top_left']:.4f}  sensitivity" in lines[1]


@pytest.mark.slow
def test_predict_gives_every_label_its_probability_and_decision(multilabel_run, tmp_path, capsys):
  manifest, workdir, _ = multilabel_run
  workdir = pathlib.Path(shutil.copytree(workdir, tmp_path / "run"))  # evaluate writes into it
  table = tmp_path / "predictions.csv"
  files = [str(manifest.parent / f"val{k}.png") for k in range(4)]
  # Each label's operating point, as radjax evaluate chose them on VAL.
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest"]) == 0
  point = json.loads((workdir / "operating_point.json").read_text())
  cuts = evaluation.label_thresholds(point, LABELS)
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--csv", str(table), *files]) == 0
  captured = capsys.readouterr()
  assert ("Decision: each label above its threshold ("
          + ", ".join(f"{n} {cuts[n]:.4f}" for n in LABELS)
          + f"; from {workdir / 'operating_point.json'} (Youden's J, each label's own))"
          ) in captured.err
  rows = list(csv.DictReader(table.open()))
  assert list(rows[0]) == ["path", *(f"probability_{n}" for n in LABELS), "class", "error",
                           "probability_sd"]
  for row in rows:
    p = {n: float(row[f"probability_{n}"]) for n in LABELS}
    assert row["class"] == ("+".join(n for n in LABELS if p[n] > cuts[n]) or "none")
  assert not np.isclose(sum(float(rows[0][f"probability_{n}"]) for n in LABELS), 1.0)  # sigmoids
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "latest", "--json",
                   "--tta", "2", "--threshold", "0.9", files[0]]) == 0
  reply = json.loads(capsys.readouterr().out)
  (p,) = reply["predictions"]
  assert reply["threshold"] == dict.fromkeys(LABELS, 0.9)
  assert set(p["probabilities_sd"]) == set(LABELS)
  assert p["label"] == ("+".join(n for n in LABELS if p["probabilities"][n] > 0.9) or "none")
  assert cli.main(["predict", "--workdir", str(workdir), "--threshold", "1.5", files[0]]) == 2
  assert capsys.readouterr().err.strip() == (
      "radjax predict: error: --threshold 1.5: expected a probability strictly between 0 and 1")


@pytest.mark.slow
def test_explain_shows_a_named_label(multilabel_run, tmp_path, capsys):
  manifest, workdir, _ = multilabel_run
  trained = run_lib.load(workdir, "latest")
  image = manifest.parent / "val0.png"
  e = explanation.explain_file(trained, image, layer="mixed2", patch_fraction=0.25)
  assert e.multilabel and set(e.probabilities) == set(LABELS)
  assert e.explained == max(e.probabilities, key=e.probabilities.get)
  other = next(n for n in LABELS if n != e.explained)
  asked = explanation.explain_file(trained, image, layer="mixed2", patch_fraction=0.25,
                               target_class=other)
  assert asked.explained == other and not np.allclose(asked.gradcam, e.gradcam)
  out = tmp_path / "maps"
  assert cli.main(["explain", "--workdir", str(workdir), "--checkpoint", "latest", "--out",
                   str(out), "--layer", "mixed2", "--class", other, str(image)]) == 0
  assert f"(maps: evidence for {other})" in capsys.readouterr().out
  assert (out / "val0.explain.png").stat().st_size > 20_000


@pytest.mark.slow
def test_multilabel_arrays_export_and_evaluate_as_the_csv_does(multilabel_run, tmp_path):
  from radjax.data import arrays
  from radjax.training import config as config_lib
  from radjax.data import datasets

  manifest, workdir, _ = multilabel_run
  config = config_lib.load_config(config_lib.shipped_config("smoke"), [
      f"--config.image_size={SIZE}", "--config.augment_on=device"])
  npz = tmp_path / "findings.npz"
  arrays.export(config, npz, datasets.list_every_split(manifest))
  pipeline = datasets.open_pipeline(npz, config)
  listed = listing.list_manifest(manifest)
  assert pipeline.multilabel and pipeline.class_names == list(LABELS)
  assert pipeline.counts() == listed.counts()
  assert [e.label for e in pipeline.examples["val"]] == \
      [e.label for e in sorted(listed.splits["val"], key=lambda e: e.path)]
  batch = next(pipeline.train_batches(6, 1))
  assert batch["label"].shape == (6, 3) and set(np.unique(batch["label"])) <= {-1, 0, 1}
  # The checkpoint evaluated on the arrays: the CSV's figures (the same pixels).
  for data_dir, out in ((manifest, tmp_path / "csv"), (npz, tmp_path / "npz")):
    assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest",
                     "--data", str(data_dir), "--out", str(out)]) == 0
  from_csv, from_npz = (json.loads((tmp_path / d / "metrics.json").read_text())
                        for d in ("csv", "npz"))
  # Integer pixels are scaled on the device from arrays, by tf.data from the CSV: float32 rounding.
  for key in ("loss", "accuracy", "auc"):
    assert from_npz[key] == pytest.approx(from_csv[key], rel=1e-5), key
  for a, b in zip(from_npz["per_class"], from_csv["per_class"]):
    assert {k: a[k] for k in ("auc", "count", "known")} == \
        pytest.approx({k: b[k] for k in ("auc", "count", "known")}, rel=1e-5)
  bad = config_lib.load_config(config_lib.shipped_config("smoke"), [
      f"--config.image_size={SIZE}", "--config.augment_on=device", "--config.sampling=balanced"])
  with pytest.raises(UserError, match="^--config.sampling=balanced: balances classes; "
                                      "multilabel data has independent labels"):
    datasets.open_pipeline(npz, bad)


@pytest.mark.slow
def test_a_findings_csv_is_cross_validated_per_label(tmp_path, jit_cache, capsys):
  from radjax.commands import cv
  from radjax.data import folds as folds_lib
  from radjax.training import cross_validation as cv_lib

  manifest = _write_multilabel_csv(tmp_path, per_split=(18, 6))
  workdir = tmp_path / "cv"
  assert cli.main(["cv", "--config", "smoke", "--workdir", str(workdir), "--folds", "2",
                   f"--config.data_dir={manifest}", f"--config.image_size={SIZE}",
                   "--config.num_epochs=1", "--config.batch_size=6",
                   "--config.augment.enabled=false",
                   f"--config.compilation_cache={jit_cache}"]) == 0
  out = capsys.readouterr().out
  plan = json.loads((workdir / cv_lib.PLAN).read_text())
  assert len(plan["paths"]) == 24 and len(plan["labels"][0]) == 3
  truth = dict(zip(plan["paths"], plan["labels"]))
  held = [json.loads((workdir / folds_lib.fold_name(0, k) / cv_lib.HELD_OUT).read_text()) for k in (1, 2)]
  paths = [p for h in held for p in h["paths"]]
  assert sorted(paths) == plan["paths"]  # every image held out once
  logits = np.concatenate([h["logits"] for h in held])
  labels = np.concatenate([h["labels"] for h in held])
  assert labels.tolist() == [truth[p] for p in paths] and (labels == -1).any()
  for k, fold_of in enumerate(plan["assignment"]["0"]):  # a fold's data: a manifest of links
    fold_manifest = workdir / "data" / folds_lib.fold_name(0, fold_of) / cv_lib.FOLD_MANIFEST
    rows = {r["path"]: r for r in csv.DictReader(fold_manifest.open())}
    assert rows[f"{cv_lib.FOLD_IMAGES}/{plan['paths'][k]}"]["split"] == "val"
  summary = json.loads((workdir / cv.SUMMARY).read_text())
  seed = summary["per_seed"]["0"]
  for k, name in enumerate(LABELS):  # pooled per label over its known images, as scikit-learn
    known = labels[:, k] >= 0
    assert seed["per_class"][k]["auc"] == pytest.approx(
        skm.roc_auc_score(labels[known, k], logits[known, k]))
    assert seed["per_class"][k]["known"] == known.sum()
  assert seed["pooled"]["auc"] == pytest.approx(np.mean([m["auc"] for m in seed["per_class"]]))
  assert set(seed["intervals"]) == {"auc", "accuracy", "sensitivity", "specificity"}
  with (workdir / cv.PREDICTIONS_CSV).open() as f:
    table = list(csv.DictReader(f))
  assert len(table) == 24 and {f"p_{n}" for n in LABELS} <= set(table[0])
  assert "Out-of-fold pooled macro per-label ROC AUC" in out


def test_multilabel_data_refuses_class_weights_in_one_line(tmp_path):
  from radjax.training import config as config_lib
  from radjax.data import datasets

  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  config = config_lib.load_config(config_lib.shipped_config("smoke"), [
      f"--config.data_dir={manifest}", "--config.class_weight=balanced"])
  with pytest.raises(UserError, match="--config.class_weight=balanced: weights are per class; "
                                      "multilabel data has independent labels"):
    datasets.open_pipeline(manifest, config)



@pytest.mark.slow
def test_stress_flips_are_each_labels_decision_changes(multilabel_run, tmp_path):
  """The clean row is evaluate's macro AUC; an inverted film's flip rate is the share of its
  labels whose decision changes when the inverted film is predicted."""
  from PIL import Image

  from radjax.data import images

  manifest, workdir, _ = multilabel_run
  assert cli.main(["stress", "--workdir", str(workdir), "--checkpoint", "latest", "--families",
                   "invert", "--out", str(tmp_path / "out")]) == 0
  result = json.loads((tmp_path / "out" / "stress.json").read_text())
  assert result["task"] == "multilabel" and len(result["threshold_logit"]) == len(LABELS)
  evaluated = evaluation.evaluate_workdir(workdir, which="latest", out_dir=tmp_path / "eval")
  assert result["conditions"][0]["auc"] == pytest.approx(evaluated["auc"])
  inverted = tmp_path / "inverted"
  inverted.mkdir()
  for k, path in enumerate(result["images"]):
    Image.fromarray((255 - images.read_image(path)).astype(np.uint8)).save(inverted / f"{k}.png")

  def decided(label):
    return {n: n in label.split("+") for n in LABELS}
  before = [decided(r.label) for r in scoring.predict_files(workdir, result["images"], "latest")[0]]
  after = {r.path: decided(r.label) for r in scoring.predict_files(workdir, [inverted], "latest")[0]}
  want = [np.mean([b[n] != after[str(inverted / f"{k}.png")][n] for n in LABELS])
          for k, b in enumerate(before)]
  np.testing.assert_allclose(result["conditions"][1]["image_flips"], want)


@pytest.mark.slow
def test_an_export_decides_each_label_as_predict_and_the_page_do(multilabel_run, tmp_path, capsys):
  """Each label's operating point (evaluate's, on VAL) travels in the export: `predict --model`
  and the reading page give the run's probabilities and decisions."""
  from starlette.testclient import TestClient

  from radjax.commands import serve

  manifest, workdir, _ = multilabel_run
  workdir = pathlib.Path(shutil.copytree(workdir, tmp_path / "run"))  # evaluate writes into it
  files = [str(manifest.parent / f"val{k}.png") for k in range(6)]
  assert cli.main(["evaluate", "--workdir", str(workdir), "--checkpoint", "latest"]) == 0
  cuts = evaluation.label_thresholds(json.loads((workdir / "operating_point.json").read_text()),
                                   LABELS)
  model = tmp_path / "findings.radjax"
  assert cli.main(["export", "--workdir", str(workdir), "--checkpoint", "latest",
                   "--out", str(model)]) == 0
  point = json.loads((model / "radjax.json").read_text())["operating_point"]
  assert point["threshold"] == pytest.approx(cuts)
  assert any(abs(cut - 0.5) > 1e-3 for cut in cuts.values())  # not predict's default
  capsys.readouterr()
  assert cli.main(["predict", "--workdir", str(workdir), "--checkpoint", "latest", "--json",
                   *files]) == 0
  from_run = json.loads(capsys.readouterr().out)
  assert cli.main(["predict", "--model", str(model), "--json", *files]) == 0
  from_model = json.loads(capsys.readouterr().out)
  assert from_model["threshold"] == pytest.approx(from_run["threshold"])
  # predict batches these films otherwise from the run and from the export, the page one at a
  # time: held to the model's own spread over those batch shapes.
  spread = run_and_export_spread(workdir, model, files, (1, len(files), 16))
  for a, b, own in zip(from_run["predictions"], from_model["predictions"], spread, strict=True):
    assert a["label"] == b["label"]
    assert_within_spread([b["probabilities"][n] for n in LABELS],
                         [a["probabilities"][n] for n in LABELS], own)
  with TestClient(serve.make_app(serve.Reader(model=model))) as client:
    answer = client.post("/predict", params={"name": "val0.png"},
                         content=pathlib.Path(files[0]).read_bytes()).json()
  assert answer["error"] is None and answer["decision"] == from_run["predictions"][0]["label"]
  assert_within_spread([answer["probabilities"][n] for n in LABELS],
                       [from_run["predictions"][0]["probabilities"][n] for n in LABELS], spread[0])
  assert answer["rule"].startswith("each label above its threshold: " + ", ".join(
      f"{n} {cuts[n]:.4f}" for n in LABELS) + " (")
