"""Dataset audit, stratified split and augmentation preview (audit, split, augment-preview)."""

import collections
import csv
import hashlib
import itertools
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from radjax.commands import audit, cli, preview
from radjax.configs import default
from radjax.data import audit as dataset_audit, duplicates, files, listing, splitting
from radjax.errors import UserError


def _copy(dataset_dir, root, layout):
  """layout: {(dest folder, source split/class folder): number of files (sorted order)}."""
  for (dest, source), count in layout.items():
    (root / dest).mkdir(parents=True, exist_ok=True)
    for path in sorted((dataset_dir / source).glob("*.png"))[:count]:
      shutil.copy(path, root / dest / path.name)
  return root


def _snapshot(root):
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# audit
# ---------------------------------------------------------------------------------------------

def test_audit_of_the_shared_dataset(dataset_dir):
  report = audit.audit(dataset_dir, progress=False)
  splits = report["splits"]
  assert {s: v["classes"] for s, v in splits.items()} == {
      "train": {"abd": 32, "chest": 33}, "val": {"abd": 5, "chest": 5}}
  assert report["exact_duplicates"] == [{
      "files": ["VAL/abd/abd3.png", "VAL/abd/abd4.png"], "splits": ["val"], "across_splits": False,
      "sha256": hashlib.sha256((dataset_dir / "VAL/abd/abd3.png").read_bytes()).hexdigest()}]
  # Distinct radiographs are >= 10 bits apart here: the threshold flags none of them.
  assert report["near_duplicates"] == []
  assert report["unreadable"] == [] and report["non_images"] == [] and report["warnings"] == []
  assert splits["train"]["width"] == {"min": 157, "median": 512.0, "max": 512}
  assert splits["train"]["height"]["min"] == 179 and splits["train"]["height"]["max"] == 623
  assert splits["train"]["formats"] == {"PNG RGB 8-bit": 65}
  text = audit.format_report(report)
  assert "within val: VAL/abd/abd3.png = VAL/abd/abd4.png" in text
  assert "LEAKAGE" not in text


@pytest.fixture
def messy_dataset(dataset_dir, tmp_path):
  """3 + 3 training and 1 + 1 validation images, plus leaks, near copies and broken files."""
  root = _copy(dataset_dir, tmp_path / "messy", {("TRAIN/abd", "TRAIN/abd"): 3,
                                                  ("TRAIN/chest", "TRAIN/chest"): 3,
                                                  ("VAL/abd", "VAL/abd"): 1,
                                                  ("VAL/chest", "VAL/chest"): 1})
  shutil.copy(root / "TRAIN/abd/abd0.png", root / "VAL/abd/leak.png")  # exact, across splits
  chest = Image.open(root / "TRAIN/chest/chst33.png").convert("RGB")
  chest.save(root / "VAL/chest/near.jpg", quality=90)  # re-encoded: near, across splits
  brighter = np.clip(np.asarray(Image.open(root / "TRAIN/chest/chst34.png"), np.int16) + 2, 0, 255)
  Image.fromarray(brighter.astype(np.uint8)).save(root / "TRAIN/chest/brighter.png")  # near, within
  (root / "TRAIN/abd/empty.png").write_bytes(b"")
  (root / "TRAIN/abd/broken.png").write_bytes((root / "TRAIN/abd/abd1.png").read_bytes()[:200])
  (root / "TRAIN/abd/notes.txt").write_text("not an image")
  shutil.copy(root / "TRAIN/abd/abd1.png", root / "TRAIN/stray.png")
  return root


def test_audit_flags_leakage_near_duplicates_and_bad_files(messy_dataset):
  report = audit.audit(messy_dataset, progress=False)
  assert {s: v["classes"] for s, v in report["splits"].items()} == {
      "train": {"abd": 3, "chest": 4}, "val": {"abd": 2, "chest": 2}}
  exact = report["exact_duplicates"]
  assert [(e["files"], e["splits"], e["across_splits"]) for e in exact] == [
      (["TRAIN/abd/abd0.png", "VAL/abd/leak.png"], ["train", "val"], True)]
  near = [(e["files"], e["across_splits"]) for e in report["near_duplicates"]]
  assert near == [(["TRAIN/chest/chst33.png", "VAL/chest/near.jpg"], True),   # leakage first
                  (["TRAIN/chest/brighter.png", "TRAIN/chest/chst34.png"], False)]
  assert all(e["distance"] <= duplicates.NEAR_DUPLICATE_MAX_DISTANCE for e in report["near_duplicates"])
  unreadable = {e["path"]: e["reason"] for e in report["unreadable"]}
  assert set(unreadable) == {"TRAIN/abd/empty.png", "TRAIN/abd/broken.png"}
  assert unreadable["TRAIN/abd/empty.png"] == "empty file (0 bytes)"
  assert "cannot be read as an image" in unreadable["TRAIN/abd/broken.png"]
  assert {e["path"]: e["reason"] for e in report["non_images"]} == {
      "TRAIN/abd/notes.txt": "not an image file (expected .png, .jpg, .jpeg or DICOM)",
      "TRAIN/stray.png": "file outside a class folder"}
  assert report["warnings"][0].startswith("LEAKAGE: 2 duplicate(s)")
  assert any(w.startswith("VAL/abd/ has only 2 readable image(s)") for w in report["warnings"])
  text = audit.format_report(report)
  assert "!! LEAKAGE across train/val: TRAIN/abd/abd0.png = VAL/abd/leak.png" in text
  assert "!! LEAKAGE across train/val: TRAIN/chest/chst33.png ~ VAL/chest/near.jpg" in text
  assert "TRAIN/abd/empty.png: empty file (0 bytes)" in text


def test_small_class_warning_thresholds():
  folder = {"train": "TRAIN"}
  assert dataset_audit._class_warnings({"train": {"a": 100, "b": 10}}, folder) == []
  warned = dataset_audit._class_warnings({"train": {"a": 100, "b": 9, "c": 4}}, folder)
  # Three classes are a multiclass task, not a problem: only the small classes are warned of.
  assert [w.split(" has")[0] for w in warned] == ["TRAIN/b/", "TRAIN/c/"]


def test_hamming_pairs_match_brute_force(monkeypatch):
  assert duplicates.hamming_pairs([0, 0b111, 2**64 - 1], 3) == [(0, 1, 3)]
  rng = np.random.default_rng(0)
  hashes = rng.integers(0, 2**63, 40, dtype=np.uint64)
  hashes[5] = hashes[30] ^ np.uint64(0b1011)  # 3 bits apart, across chunk boundaries below
  monkeypatch.setattr(duplicates, "HASH_ROWS_PER_CHUNK", 7)
  expected = [(i, j, bin(int(hashes[i]) ^ int(hashes[j])).count("1"))
              for i, j in itertools.combinations(range(40), 2)]
  assert duplicates.hamming_pairs(hashes, 24) == [p for p in expected if p[2] <= 24]
  assert (5, 30, 3) in duplicates.hamming_pairs(hashes, 3)


# ---------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def flat_source(dataset_dir, tmp_path):
  """One folder per class, 14 abdomen and 7 chest images: an unsplit set."""
  return _copy(dataset_dir, tmp_path / "src",
               {("abd", "TRAIN/abd"): 14, ("chest", "TRAIN/chest"): 7})


def _manifest(dst):
  with (dst / splitting.MANIFEST).open() as f:
    return list(csv.DictReader(f))


def test_allocate_is_exact_proportional_and_gives_every_class_one():
  assert splitting.allocate({"abd": 14, "chest": 7}, 6) == {"abd": 4, "chest": 2}
  assert splitting.allocate({"a": 90, "b": 9, "c": 1}, 10) == {"a": 8, "b": 1, "c": 1}
  assert splitting.allocate({"a": 90, "b": 9, "c": 1}, 2) == {"a": 2, "b": 0, "c": 0}  # fewer than 3
  rng = np.random.default_rng(0)
  for _ in range(200):
    counts = {f"c{k}": int(n) for k, n in enumerate(rng.integers(1, 50, rng.integers(2, 6)))}
    total = int(rng.integers(0, sum(counts.values())))
    parts = splitting.allocate(counts, total)
    assert sum(parts.values()) == total
    if total >= len(counts):
      assert min(parts.values()) >= 1


def test_split_counts_are_exact_stratified_and_src_untouched(flat_source, tmp_path):
  before = _snapshot(flat_source)
  dst = tmp_path / "out"
  result = splitting.split_dataset(flat_source, dst, val=6, seed=1, test=3)
  assert result["counts"] == {"train": {"abd": 8, "chest": 4}, "val": {"abd": 4, "chest": 2},
                              "test": {"abd": 2, "chest": 1}}
  assert _snapshot(flat_source) == before
  after = _snapshot(dst)
  rows = _manifest(dst)
  assert sorted(r["path"] for r in rows) == sorted(p for p in after if p != splitting.MANIFEST)
  for cls in ("abd", "chest"):  # every source file in exactly one split, bytes unchanged
    copied = sorted(p.split("/")[-1] for p in after if f"/{cls}/" in p)
    assert copied == sorted(p.name for p in (flat_source / cls).iterdir())
  for r in rows:
    assert after[r["path"]] == before[f"{r['class']}/{r['path'].split('/')[-1]}"]
    assert r["path"].startswith(splitting.SPLIT_FOLDERS[r["split"]] + "/" + r["class"] + "/")
    assert r["fold"] == ""
  # The result is a dataset radjax can train on.
  assert listing.list_folders(dst, splits=("train", "val", "test")).counts() == result["counts"]


def test_split_is_reproducible_by_seed(flat_source, tmp_path):
  def val_files(seed, name):
    splitting.split_dataset(flat_source, tmp_path / name, val=6, seed=seed)
    return [r["path"] for r in _manifest(tmp_path / name) if r["split"] == "val"]

  assert val_files(7, "a") == val_files(7, "b")
  assert val_files(7, "a2") != val_files(8, "c")


def test_kfold_manifest_covers_training_images_once_with_balanced_folds(flat_source, tmp_path):
  dst = tmp_path / "out"
  splitting.split_dataset(flat_source, dst, val=3, seed=0, folds=4)
  rows = _manifest(dst)
  train = [r for r in rows if r["split"] == "train"]
  on_disk = sorted(p.relative_to(dst).as_posix() for p in (dst / "TRAIN").rglob("*.png"))
  assert sorted(r["path"] for r in train) == on_disk and len(on_disk) == len(set(on_disk)) == 18
  assert all(r["fold"] == "" for r in rows if r["split"] != "train")
  sizes = np.zeros((2, 4), int)
  for r in train:
    sizes[("abd", "chest").index(r["class"]), int(r["fold"])] += 1
  np.testing.assert_array_equal(sizes, [[3, 3, 3, 3], [2, 2, 1, 1]])  # abd 12, chest 6
  assert np.ptp(sizes.sum(0)) <= 1


def test_split_refusals(flat_source, dataset_dir, tmp_path):
  with pytest.raises(UserError, match="already split"):
    splitting.split_dataset(dataset_dir, tmp_path / "a", val=4, seed=0)
  with pytest.raises(UserError, match="keep at least 1 for TRAIN"):
    splitting.split_dataset(flat_source, tmp_path / "b", val=20, seed=0)
  with pytest.raises(UserError, match="keep at least 1 for TRAIN"):
    splitting.split_dataset(flat_source, tmp_path / "b", val=10, test=10, seed=0)
  with pytest.raises(UserError, match="fewer training images than folds"):
    splitting.split_dataset(flat_source, tmp_path / "b", val=4, seed=0, folds=7)
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("")
  with pytest.raises(UserError, match="not empty"):
    splitting.split_dataset(flat_source, tmp_path / "full", val=4, seed=0)
  with pytest.raises(UserError, match="inside"):
    splitting.split_dataset(flat_source, flat_source / "out", val=4, seed=0)
  shutil.rmtree(flat_source / "chest")
  with pytest.raises(UserError, match="1 class folder"):
    splitting.split_dataset(flat_source, tmp_path / "b", val=4, seed=0)
  assert not (tmp_path / "b").exists() and not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------------------------
# augment-preview
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("acquisition", [False, True])
def test_preview_shows_what_training_sees(dataset_dir, tmp_path, acquisition):
  root = _copy(dataset_dir, tmp_path / "d", {("TRAIN/abd", "TRAIN/abd"): 1,
                                             ("TRAIN/chest", "TRAIN/chest"): 1,
                                             ("VAL/abd", "VAL/abd"): 1,
                                             ("VAL/chest", "VAL/chest"): 1})
  config = default.get_config()
  config.image_size = 64
  if acquisition:  # bands, overlays and intensity changes on every image: shown as trained
    for group in ("framing", "overlays", "intensity"):
      config.augment[group].probability = 1.0
  first = preview.first_training_image(root)
  assert first.endswith("TRAIN/abd/abd0.png")
  panels = preview.preview_panels(first, 2, config.seed, config)
  pipeline = files.Pipeline(listing.list_folders(root), config)
  for epoch in (1, 2):  # training's epochs count from 1, and so do the panels
    batch = next(b for b in pipeline.train_batches(1, epoch) if b["label"][0] == 0)  # index 0
    # The panel is the pipeline's image rounded to uint8 for display.
    np.testing.assert_allclose(batch["image"][0], panels[epoch] / 127.5 - 1.0,
                               atol=0.5 / 127.5 + 1e-5)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def test_cli_audit(dataset_dir, tmp_path, capsys):
  assert cli.main(["audit", str(dataset_dir)]) == 0
  assert "within val: VAL/abd/abd3.png = VAL/abd/abd4.png" in capsys.readouterr().out
  assert cli.main(["audit", "--json", str(dataset_dir)]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["splits"]["val"]["classes"] == {"abd": 5, "chest": 5}
  assert cli.main(["audit", str(tmp_path / "missing")]) == 2
  assert "no such data directory" in capsys.readouterr().err


def test_cli_split(flat_source, tmp_path, capsys):
  dst = tmp_path / "out"
  assert cli.main(["split", str(flat_source), str(dst), "--val", "6", "--seed", "3",
                   "--folds", "2"]) == 0
  assert "VAL       6  (abd 4, chest 2)" in capsys.readouterr().out
  assert {r["fold"] for r in _manifest(dst) if r["split"] == "train"} == {"0", "1"}
  assert cli.main(["split", str(flat_source), str(dst), "--val", "6", "--seed", "3"]) == 2
  assert "not empty" in capsys.readouterr().err


def test_cli_augment_preview_writes_the_grid(dataset_dir, tmp_path, capsys):
  out = tmp_path / "aug.png"
  assert cli.main(["augment-preview", str(dataset_dir), "--out", str(out), "--n", "3"]) == 0
  assert "original + 3 augmented" in capsys.readouterr().out
  cell = round(preview.PANEL_INCHES * preview.DPI)
  grid = np.asarray(Image.open(out).convert("L"), np.float32)
  assert grid.shape == (2 * cell, 2 * cell)  # 4 panels: 2 x 2
  # The middle of each cell is image, not title: the augmented versions differ from each other
  # and from the original.
  middle = slice(cell // 3, 2 * cell // 3)
  cells = [grid[r * cell:(r + 1) * cell][middle, c * cell:(c + 1) * cell][:, middle]
           for r in range(2) for c in range(2)]
  for a, b in itertools.combinations(cells, 2):
    assert np.abs(a - b).mean() > 5
  assert cli.main(["augment-preview", "--out", str(out)]) == 2  # neither DATA_DIR nor --image
  assert cli.main(["augment-preview", "--out", str(out), "--image", str(tmp_path / "no.png")]) == 2
  assert "no.png" in capsys.readouterr().err


def test_load_default_config_reads_configs_default():
  from radjax.training.config import default_config

  config = default_config()
  assert config.image_size == default.get_config().image_size == 299
  assert config.augment.to_dict() == default.get_config().augment.to_dict()


def _patients_source(dataset_dir, root):
  """abd/ and chest/ with 4 images in each of 6 patient sub-folders; patients P0 and P1 have
  films in both classes (one patient's chest and abdomen films)."""
  sources = {c: sorted((dataset_dir / "TRAIN" / c).glob("*.png")) for c in ("abd", "chest")}
  for cls, names in (("abd", ["P0", "P1", "A2", "A3", "A4", "A5"]),
                     ("chest", ["P0", "P1", "C2", "C3", "C4", "C5"])):
    for k, patient in enumerate(names):
      (root / cls / patient).mkdir(parents=True)
      for i in range(4):
        src = sources[cls][(4 * k + i) % len(sources[cls])]
        shutil.copy(src, root / cls / patient / f"{i}_{src.name}")
  return root


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_group_by_keeps_each_patient_in_one_split_and_fold(dataset_dir, tmp_path, seed):
  src = _patients_source(dataset_dir, tmp_path / "src")
  result = splitting.split_dataset(src, tmp_path / "dst", val=8, seed=seed, folds=2, group_by="folder")
  rows = _manifest(tmp_path / "dst")
  assert len(rows) == 48 and result["groups"] == 10  # P0 and P1 span both classes
  where, fold = {}, {}
  for r in rows:
    patient = r[splitting.GROUP_COLUMN]
    assert patient == pathlib.PurePosixPath(r["path"]).parts[2]  # TRAIN/<class>/<patient>/...
    where.setdefault(patient, set()).add(r["split"])
    if r["split"] == "train":
      fold.setdefault(patient, set()).add(r["fold"])
  assert all(len(s) == 1 for s in where.values()), where
  assert all(len(f) == 1 for f in fold.values()), fold
  val = collections.Counter(r["class"] for r in rows if r["split"] == "val")
  assert sum(val.values()) <= 8 and set(val) == {"abd", "chest"}


def test_split_group_by_patient_id_reads_dicom(tmp_path):
  from conftest import write_dicom
  from test_shortcuts import _anatomy

  rng = np.random.default_rng(0)
  for cls in ("abd", "chest"):
    (tmp_path / "src" / cls).mkdir(parents=True)
    for i in range(6):
      write_dicom(tmp_path / "src" / cls / f"{i}.dcm", (_anatomy(rng) * 16).astype(np.uint16),
                   PatientID=f"{cls}-{i // 2}")
  splitting.split_dataset(tmp_path / "src", tmp_path / "dst", val=4, seed=0, group_by="patient_id")
  rows = _manifest(tmp_path / "dst")
  by_patient = {}
  for r in rows:
    by_patient.setdefault(r[splitting.GROUP_COLUMN], set()).add(r["split"])
  assert len(by_patient) == 6 and all(len(s) == 1 for s in by_patient.values())
  with pytest.raises(UserError, match="--group-by ward: expected one of patient_id, folder"):
    splitting.split_dataset(tmp_path / "src", tmp_path / "x", val=4, seed=0, group_by="ward")
