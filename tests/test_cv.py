"""`radjax cv`: folds that keep duplicates and patients whole, resumable fold runs, the summary."""

import csv
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from radjax.commands import cli, cv
from radjax.data import folds as folds_lib, splitting
from radjax.training import cross_validation as cv_lib
from radjax.training import loop as train
from radjax.errors import UserError
from conftest import copy_subset
from conftest import write_dicom
from test_shortcuts import _anatomy

REPO = pathlib.Path(__file__).resolve().parents[1]


def _labels_by_fold(plan, seed="0"):
  folds = {}
  for label, f in zip(plan["labels"], plan["assignment"][seed]):
    folds.setdefault(f, []).append(label)
  return folds


@pytest.fixture
def grouped_set(dataset_dir, tmp_path):
  """Unsplit class folders (8 abd, 8 chest PNGs) plus: an exact copy, a JPEG re-encoding (near
  duplicate) and 3 DICOM files of one patient with different pixels."""
  root = tmp_path / "grouped"
  for cls in ("abd", "chest"):
    (root / cls).mkdir(parents=True)
    for src in sorted((dataset_dir / "TRAIN" / cls).glob("*.png"))[:8]:
      shutil.copy(src, root / cls / src.name)
  shutil.copy(root / "abd" / "abd0.png", root / "abd" / "copy_of_abd0.png")
  Image.open(root / "chest" / "chst33.png").convert("L").save(root / "chest" / "chst33_again.jpg",
                                                              quality=90)
  rng = np.random.default_rng(0)
  for i in range(3):
    write_dicom(root / "chest" / f"patient_x_{i}.dcm", (_anatomy(rng) * 16).astype(np.uint16),
                 PatientID="X")
  return root


def test_duplicates_and_one_patients_images_share_a_fold(grouped_set):
  plan = folds_lib.make_plan(grouped_set, folds=3, seeds=[0, 1, 2])
  assert len(plan["paths"]) == 21
  expected = [{"abd/abd0.png", "abd/copy_of_abd0.png"},
              {"chest/chst33.png", "chest/chst33_again.jpg"},
              {f"chest/patient_x_{i}.dcm" for i in range(3)}]
  groups = [set(g) for g in plan["groups"]]
  for group in expected:
    assert group in groups
  fold_of = {seed: dict(zip(plan["paths"], folds)) for seed, folds in plan["assignment"].items()}
  for seed, folds in fold_of.items():
    for group in expected:
      assert len({folds[p] for p in group}) == 1, (seed, group)
    assert sorted(set(folds.values())) == [1, 2, 3]
    for labels in _labels_by_fold(plan, seed).values():  # stratified: both classes in every fold
      assert set(labels) == {0, 1}
  assert fold_of["0"] != fold_of["1"]  # seeds give new folds
  assert folds_lib.make_plan(grouped_set, folds=3, seeds=[0])["assignment"]["0"] == plan["assignment"]["0"]


def test_split_folders_are_pooled_and_test_is_left_out(dataset_dir, tmp_path):
  root = copy_subset(dataset_dir, tmp_path / "d", {"TRAIN": 4, "VAL": 2, "TEST": 1})
  plan = folds_lib.make_plan(root, folds=2, seeds=[0])
  assert len(plan["paths"]) == 12 and not any(p.startswith("TEST/") for p in plan["paths"])
  assert "TEST/ left out" in plan["source"]
  assert plan["class_names"] == ["abd", "chest"]


def test_bad_settings_are_refused_in_one_line(grouped_set, tmp_path):
  with pytest.raises(UserError, match="--folds 1: cross-validation needs at least 2"):
    folds_lib.make_plan(grouped_set, folds=1, seeds=[0])
  with pytest.raises(UserError, match="class abd has 9 image.*fewer than --folds 10"):
    folds_lib.make_plan(grouped_set, folds=10, seeds=[0])
  with pytest.raises(UserError, match="no such file"):
    folds_lib.make_plan(None, folds=0, seeds=[0], manifest=tmp_path / "missing.csv")
  (tmp_path / "bad.csv").write_text("path,label\nx.png,abd\n")
  with pytest.raises(UserError, match="not a `radjax split` manifest"):
    folds_lib.make_plan(None, folds=0, seeds=[0], manifest=tmp_path / "bad.csv")
  with pytest.raises(UserError, match="x.npz: cross-validation reads class folders or a CSV"):
    folds_lib.make_plan(tmp_path / "x.npz", folds=2, seeds=[0])
  (tmp_path / "one").mkdir()
  (tmp_path / "one" / "abd").mkdir()
  with pytest.raises(UserError, match="neither TRAIN/ and VAL/ nor two class folders"):
    folds_lib.make_plan(tmp_path / "one", folds=2, seeds=[0])
  (tmp_path / "single.csv").write_text("path,class,split,fold\nabd/abd0.png,abd,TRAIN,0\n")
  with pytest.raises(UserError, match=f"^{tmp_path / 'single.csv'}: found 1 class\\(es\\) "
                                      "\\(abd\\); cross-validation needs at least two$"):
    folds_lib.make_plan(None, folds=0, seeds=[0], manifest=tmp_path / "single.csv")
  # Multilabel folds: each must train on both values of every label.
  labels = [[1, 0], [0, 1], [1, -1], [0, 0]]
  with pytest.raises(UserError, match="^where: fold 1 trains on no positive a image; every fold "
                                      "needs both values of every label"):
    folds_lib._check_folds([1, 2, 1, 2], labels, 2, ["a", "b"], "where")
  folds_lib._check_folds([1, 1, 1, 2, 2, 2], [[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], 2,
                  ["a", "b"], "where")  # both values of both labels in each fold's training part


def test_the_folds_of_a_split_manifest_are_used(grouped_set, tmp_path):
  dst = tmp_path / "split"
  splitting.split_dataset(grouped_set, dst, val=2, seed=0, folds=3)
  with (dst / splitting.MANIFEST).open() as f:
    rows = [r for r in csv.DictReader(f) if r["fold"]]
  plan = folds_lib.make_plan(None, folds=0, seeds=[0, 1], manifest=dst / splitting.MANIFEST)
  assert plan["folds"] == 3 and len(plan["paths"]) == len(rows) == 19
  by_path = {r["path"]: int(r["fold"]) + 1 for r in rows}  # the manifest counts folds from 0
  for seed in ("0", "1"):
    assert dict(zip(plan["paths"], plan["assignment"][seed])) == by_path
  with pytest.raises(UserError, match="--folds 4: .* has 3 folds"):
    folds_lib.make_plan(None, folds=4, seeds=[0], manifest=dst / splitting.MANIFEST)


@pytest.fixture(scope="module")
def small_set(dataset_dir, tmp_path_factory):
  """6 abd + 6 chest training and 1 + 1 validation images: two folds of 7 (steps of 5)."""
  return copy_subset(dataset_dir, tmp_path_factory.mktemp("cv"), {"TRAIN": 6, "VAL": 1})


def _cv_args(data_dir, workdir, jit_cache, *extra):
  return ["cv", "--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir),
          "--folds", "2", f"--config.data_dir={data_dir}", "--config.num_epochs=1",
          f"--config.compilation_cache={jit_cache}", *extra]


@pytest.mark.slow
def test_cv_end_to_end_resumes_an_interrupted_fold(small_set, jit_cache, tmp_path, monkeypatch,
                                                   capsys):
  workdir = tmp_path / "cv"
  real_train, trained = train.train_and_evaluate, []

  def interrupted_on_fold_2(config, fold_dir):
    if pathlib.Path(fold_dir).name == "fold_2":
      raise KeyboardInterrupt
    trained.append(pathlib.Path(fold_dir).name)
    return real_train(config, fold_dir)

  monkeypatch.setattr(train, "train_and_evaluate", interrupted_on_fold_2)
  assert cli.main(_cv_args(small_set, workdir, jit_cache)) == 130  # Ctrl-C: one line, no traceback
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "radjax cv: interrupted; the same command continues with the unfinished folds")
  assert trained == ["fold_1"] and (workdir / "seed_0/fold_1" / cv_lib.HELD_OUT).is_file()
  fold_1 = (workdir / "seed_0/fold_1" / cv_lib.HELD_OUT).read_text()

  def counted(config, fold_dir):
    trained.append(pathlib.Path(fold_dir).name)
    return real_train(config, fold_dir)

  monkeypatch.setattr(train, "train_and_evaluate", counted)
  capsys.readouterr()
  assert cli.main(_cv_args(small_set, workdir, jit_cache)) == 0
  out = capsys.readouterr().out
  assert trained == ["fold_1", "fold_2"]  # the rerun trained only the unfinished fold
  assert "seed_0/fold_1: done (epoch 1)" in out
  assert (workdir / "seed_0/fold_1" / cv_lib.HELD_OUT).read_text() == fold_1

  summary = json.loads((workdir / cv.SUMMARY).read_text())
  assert (workdir / cv.ROC_FIGURE).stat().st_size > 10_000
  with (workdir / cv.PREDICTIONS_CSV).open() as f:
    rows = list(csv.DictReader(f))
  # Every labelled image is held out exactly once, by the fold that did not train on it.
  plan = json.loads((workdir / cv_lib.PLAN).read_text())
  assert sorted(r["path"] for r in rows) == plan["paths"] and len(rows) == 14
  for r in rows:
    assert int(r["fold"]) == plan["assignment"]["0"][plan["paths"].index(r["path"])]
    fold_data = workdir / "data/seed_0" / f"fold_{r['fold']}"
    assert (fold_data / "VAL" / r["class"] / r["path"]).is_symlink()
    assert not (fold_data / "TRAIN" / r["class"] / r["path"]).exists()
  labels = [int(r["class"] == "chest") for r in rows]
  logits = [float(r["logit"]) for r in rows]
  pooled = summary["per_seed"]["0"]["pooled"]
  assert pooled["auc"] == pytest.approx(skm.roc_auc_score(labels, logits))
  assert pooled["count"] == 14
  low, high = summary["per_seed"]["0"]["intervals"]["auc"]
  assert low <= pooled["auc"] <= high
  (tn, fp), (fn, tp) = pooled["confusion_matrix"]
  exact_low, exact_high = summary["per_seed"]["0"]["exact_intervals"]["accuracy"]
  assert exact_low < (tn + tp) / 14 <= exact_high
  assert [f["count"] for f in summary["per_seed"]["0"]["folds"].values()] == [7, 7]
  assert "Out-of-fold pooled ROC AUC" in out

  # Each fold is a normal run: its held-out predictions are its final checkpoint's on its VAL.
  fold_dir = workdir / "seed_0/fold_2"
  assert cli.main(["evaluate", "--workdir", str(fold_dir), "--checkpoint", "latest"]) == 0
  evaluated = json.loads((fold_dir / "metrics.json").read_text())
  assert evaluated["auc"] == pytest.approx(summary["per_seed"]["0"]["folds"]["2"]["auc"])

  # Another dataset in the same workdir is refused, in one line.
  capsys.readouterr()
  assert cli.main(_cv_args(small_set, workdir, jit_cache, "--folds", "3")) == 2
  err = capsys.readouterr().err
  assert "holds a cross-validation with different folds" in err and len(err.splitlines()) == 1

  # A rerun with other settings follows train's resume rule, for the whole and for each fold:
  # settings that change what the weights mean are refused before anything runs...
  assert cli.main(_cv_args(small_set, workdir, jit_cache, "--config.image_size=99")) == 2
  err = capsys.readouterr().err
  assert f"{workdir}: cannot continue with changed image_size 75 -> 99" in err
  assert len(err.splitlines()) == 1
  # ... others are said and recorded: finished folds keep what they were trained with.
  assert cli.main(_cv_args(small_set, workdir, jit_cache, "--config.learning_rate=0.5")) == 0
  out = capsys.readouterr().out
  assert "settings changed since the folds started: learning_rate 0.0001 -> 0.5" in out
  assert "seed_0/fold_1: done (epoch 1)" in out and trained == ["fold_1", "fold_2"]
  changed = json.loads((workdir / cv.SUMMARY).read_text())["settings_changed"]
  assert changed == {"learning_rate": [0.0001, 0.5]}
  # A workdir without the stored settings (older radjax): each finished fold's checkpoint says.
  (workdir / cv_lib.SETTINGS).unlink()
  assert cli.main(_cv_args(small_set, workdir, jit_cache, "--config.image_size=99")) == 2
  err = capsys.readouterr().err
  assert f"{workdir / 'seed_0/fold_1'}: cannot continue with changed image_size 75 -> 99" in err


@pytest.mark.slow
def test_a_prepared_dataset_is_cross_validated_through_views_of_it(small_set, jit_cache,
                                                                  tmp_path, capsys):
  from radjax.data import prepared

  source = tmp_path / "source"
  shutil.copytree(small_set, source)
  shutil.copy(source / "TRAIN/abd/abd0.png", source / "TRAIN/abd/again.png")  # a duplicate
  out = tmp_path / "prepared"
  assert cli.main(["prepare", "--config", str(REPO / "configs" / "smoke.py"), str(source),
                   str(out)]) == 0
  shutil.rmtree(source)  # cv needs only the prepared dataset: grouping reads its pixels
  workdir = tmp_path / "cv"
  assert cli.main(_cv_args(out, workdir, jit_cache)) == 0
  console = capsys.readouterr().out
  plan = json.loads((workdir / cv_lib.PLAN).read_text())
  assert plan["prepared"] and len(plan["paths"]) == 15
  assert plan["source"] == "the train and val splits of the prepared dataset prepared"
  assert [sorted(pathlib.Path(p).name for p in g) for g in plan["groups"]] == \
      [["abd0.png", "again.png"]]  # the copy, found from the stored pixels
  where = prepared.locations(out)
  for fold in (1, 2):  # each fold's data is a view: its held-out paths, nothing copied
    view = json.loads((workdir / "data/seed_0" / f"fold_{fold}" / prepared.INDEX).read_text())
    held = sorted(p for p, f in zip(plan["paths"], plan["assignment"]["0"]) if f == fold)
    assert view["format"] == prepared.VIEW_FORMAT
    assert sorted(tuple(m) for m in view["splits"]["val"]) == sorted(where[p] for p in held)
    assert len(view["splits"]["train"]) + len(held) == 15
  with (workdir / cv.PREDICTIONS_CSV).open() as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["path"] for r in rows) == plan["paths"]  # every image held out once
  for r in rows:
    assert int(r["fold"]) == plan["assignment"]["0"][plan["paths"].index(r["path"])]
    assert r["class"] == plan["class_names"][plan["labels"][plan["paths"].index(r["path"])]]
  summary = json.loads((workdir / cv.SUMMARY).read_text())
  labels = [int(r["class"] == "chest") for r in rows]
  assert summary["per_seed"]["0"]["pooled"]["auc"] == pytest.approx(
      skm.roc_auc_score(labels, [float(r["logit"]) for r in rows]))
  assert "Out-of-fold pooled ROC AUC" in console
  # A fold's run is a normal run on its view: evaluate reads it again.
  fold_dir = workdir / "seed_0/fold_1"
  assert cli.main(["evaluate", "--workdir", str(fold_dir), "--checkpoint", "latest"]) == 0
  evaluated = json.loads((fold_dir / "metrics.json").read_text())
  assert evaluated["auc"] == pytest.approx(summary["per_seed"]["0"]["folds"]["1"]["auc"])
  # A view is not a dataset to cross-validate.
  with pytest.raises(UserError, match="a view of the prepared dataset .*; cross-validate the "
                                      "dataset itself"):
    folds_lib.labelled_images(workdir / "data/seed_0/fold_1")


def test_cli_cv_refuses_one_fold(small_set, jit_cache, tmp_path, capsys):
  assert cli.main(_cv_args(small_set, tmp_path / "w", jit_cache, "--folds", "1")) == 2
  err = capsys.readouterr().err
  assert err.strip() == "radjax cv: error: --folds 1: cross-validation needs at least 2 folds"
  assert cli.main(_cv_args(small_set, tmp_path / "w", jit_cache, "--seeds", "0")) == 2
  assert "--seeds 0: expected at least 1" in capsys.readouterr().err


def test_a_csv_manifest_is_cross_validated_over_its_rows(grouped_set):
  # abd1 and chst34 belong to one patient (its patient_id column), nothing else links them.
  patient = {"abd/abd1.png": "P7", "chest/chst34.png": "P7"}
  rows = [f"{p.relative_to(grouped_set).as_posix()},{p.parent.name},"
          f"{patient.get(p.relative_to(grouped_set).as_posix(), '')}"
          for p in sorted(grouped_set.rglob("*")) if p.is_file()]
  manifest = grouped_set / "labels.csv"
  manifest.write_text("path,label,patient_id\n" + "\n".join(rows) + "\n")
  plan = folds_lib.make_plan(manifest, folds=3, seeds=[0])
  assert len(plan["paths"]) == 21 and plan["root"] == str(grouped_set.resolve())
  assert plan["source"] == "the rows of labels.csv"
  groups = [set(g) for g in plan["groups"]]
  assert {"abd/abd0.png", "abd/copy_of_abd0.png"} in groups
  assert {"abd/abd1.png", "chest/chst34.png"} in groups
  folds = dict(zip(plan["paths"], plan["assignment"]["0"]))
  assert folds["abd/abd1.png"] == folds["chest/chst34.png"]


def test_too_few_groups_an_unreadable_file_and_dot_paths(grouped_set):
  with pytest.raises(UserError, match="--folds 3: the images form only 1 group"):
    folds_lib.assign_folds([0, 1, 0, 1], [7, 7, 7, 7], folds=3, seed=0)
  (grouped_set / "chest" / "broken.png").write_bytes(b"\x89PNG not really")
  plan = folds_lib.make_plan(grouped_set, folds=3, seeds=[0])
  assert "chest/broken.png" not in plan["paths"] and len(plan["paths"]) == 21
  # A manifest's patient_id is found however its path is spelt ("./abd/abd1.png").
  manifest = grouped_set / "labels.csv"
  manifest.write_text("path , label , patient_id\n./abd/abd1.png,abd,P7\nchest/chst34.png,chest,P7\n"
                      + "".join(f"{p.relative_to(grouped_set).as_posix()},{p.parent.name},\n"
                                for p in sorted(grouped_set.rglob("*.png"))
                                if p.name not in ("abd1.png", "chst34.png", "broken.png")))
  plan = folds_lib.make_plan(manifest, folds=3, seeds=[0])
  assert {"abd/abd1.png", "chest/chst34.png"} in [set(g) for g in plan["groups"]]
