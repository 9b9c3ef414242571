"""`radjax audit`'s shortcut audit: what predicts the label besides the anatomy."""

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from conftest import write_dicom
from radjax.commands import audit
from radjax.data import audit as dataset_audit
from radjax.metrics import shortcuts

SIDE = 64
CLASSES = ("abd", "chest")
SPLITS = {"TRAIN": 10, "VAL": 5}  # images per class (5: no small-class warning)


def _anatomy(rng) -> np.ndarray:
  """Anatomy-like content: a smooth random blob on noise, the same distribution for every class."""
  yy, xx = np.mgrid[:SIDE, :SIDE]
  cy, cx = rng.uniform(20, 44, 2)
  blob = 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(8, 16) ** 2))
  return np.clip(60 + blob + rng.normal(0, 20, (SIDE, SIDE)), 0, 255)


def _png_set(root, pixels_for):
  """root/SPLIT/class/*.png, pixels_for(rng, class_index) -> uint8 gray (SIDE, SIDE)."""
  rng = np.random.default_rng(0)
  for split, n in SPLITS.items():
    for index, cls in enumerate(CLASSES):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(pixels_for(rng, index).astype(np.uint8)).save(
            root / split / cls / f"{cls}{i}.png")
  return root


def _by_feature(report) -> dict:
  return {f["feature"]: f for f in report["shortcuts"]}


def _flagged(report) -> set:
  return {f["feature"] for f in report["shortcuts"] if f["auc"] >= shortcuts.SHORTCUT_AUC}


def test_a_bright_frame_that_encodes_the_class_is_flagged(tmp_path):
  def pixels(rng, index):
    image = _anatomy(rng)
    if index == 1:  # a burned-in bright border on one class only
      image[:3], image[-3:], image[:, :3], image[:, -3:] = 255, 255, 255, 255
    return image

  report = audit.audit(_png_set(tmp_path / "frame", pixels), progress=False)
  features = _by_feature(report)
  assert features["outer 5% frame: intensity mean"]["auc"] >= shortcuts.SHORTCUT_AUC
  assert "outer 5% frame: intensity mean" in _flagged(report)
  assert features["width"]["detail"].startswith("constant")  # same sizes: not a size shortcut
  assert report["shortcut_folds"] == 5 and report["shortcut_classes"] == ["abd", "chest"]
  assert [f["auc"] for f in report["shortcuts"]] == sorted(
      (f["auc"] for f in report["shortcuts"]), reverse=True)
  assert any(w.startswith("SHORTCUT: 'outer 5% frame: intensity mean'")
             for w in report["shortcut_warnings"])
  text = audit.format_report(report)
  assert "What predicts the label besides the anatomy" in text
  assert "SHORTCUT: 'outer 5% frame: intensity mean'" in text
  # However many shortcuts, the advice is given once, after them.
  assert len(report["shortcut_warnings"]) >= 1 and text.count(audit.SHORTCUT_ADVICE) == 1
  assert text.rstrip().endswith(audit.SHORTCUT_ADVICE)


def test_nothing_encodes_the_class(tmp_path):
  report = audit.audit(_png_set(tmp_path / "clean", lambda rng, index: _anatomy(rng)),
                       progress=False)
  features = _by_feature(report)
  # Every feature was computed, the varying ones are near chance and none is flagged.
  assert {"width", "height", "aspect ratio (width / height)", "width x height", "file format",
          "image mode", "bit depth", "file size (bytes)", "intensity mean", "intensity std",
          "outer 5% frame: intensity mean", "outer 5% frame: intensity std"} == set(features)
  for name in ("file size (bytes)", "intensity mean", "intensity std",
               "outer 5% frame: intensity mean", "outer 5% frame: intensity std"):
    assert not features[name]["constant"] and features[name]["auc"] < 0.8, features[name]
  assert features["width x height"] == {"feature": "width x height", "auc": 0.5, "constant": True,
                                        "detail": "constant (64x64)"}
  assert _flagged(report) == set() and report["shortcut_warnings"] == []
  assert report["shared_identifiers"] == [] and report["warnings"] == []
  assert audit.SHORTCUT_ADVICE not in audit.format_report(report)  # no shortcut, no advice


@pytest.fixture
def dicom_set(tmp_path):
  """Manufacturer encodes the class; patient P0 of each class has files in TRAIN and VAL."""
  rng = np.random.default_rng(1)
  root = tmp_path / "dicom"
  for split, n in SPLITS.items():
    for index, cls in enumerate(CLASSES):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        patient = f"{cls}-P{i}" if split == "TRAIN" else f"{cls}-P{0 if i == 0 else 100 + i}"
        write_dicom(root / split / cls / f"{cls}{i}.dcm", (_anatomy(rng) * 16).astype(np.uint16),
                     Manufacturer=("ACME Abdomen" if index == 0 else "Chesterton"),
                     StationName=f"STATION{rng.integers(3)}", PixelSpacing=[0.2, 0.2],
                     PatientID=patient, StudyInstanceUID=generate_uid())
  return root


def test_dicom_manufacturer_and_patients_across_splits(dicom_set):
  report = audit.audit(dicom_set, progress=False)
  features = _by_feature(report)
  assert features["DICOM Manufacturer"]["auc"] >= shortcuts.SHORTCUT_AUC
  assert features["DICOM Manufacturer"]["detail"] == "ACME Abdomen: abd 15/15, chest 0/15"
  assert _flagged(report) == {"DICOM Manufacturer"}
  assert features["DICOM StationName"]["auc"] < shortcuts.SHORTCUT_AUC
  assert features["DICOM InstitutionName"]["detail"] == f"constant ({dataset_audit.MISSING})"
  assert features["DICOM PixelSpacing"]["detail"] == "constant (0.2\\0.2)"
  assert features["file format"]["detail"] == "constant (DICOM)"
  assert any(w.startswith("SHORTCUT: 'DICOM Manufacturer'") for w in report["shortcut_warnings"])
  shared = report["shared_identifiers"]
  assert [(e["attribute"], e["value"], e["splits"], e["files"]) for e in shared] == [
      ("PatientID", "abd-P0", ["train", "val"], ["TRAIN/abd/abd0.dcm", "VAL/abd/abd0.dcm"]),
      ("PatientID", "chest-P0", ["train", "val"],
       ["TRAIN/chest/chest0.dcm", "VAL/chest/chest0.dcm"])]
  assert report["warnings"][0].startswith("LEAKAGE: 2 DICOM PatientID value(s) occur in more "
                                          "than one split")
  text = audit.format_report(report)
  assert "!! LEAKAGE PatientID abd-P0 in train/val: TRAIN/abd/abd0.dcm, VAL/abd/abd0.dcm" in text
  assert "SHORTCUT: 'DICOM Manufacturer'" in text


def test_a_study_uid_shared_across_splits_is_leakage(tmp_path):
  rng = np.random.default_rng(2)
  study = generate_uid()
  for split in ("TRAIN", "VAL"):
    for cls in CLASSES:
      (tmp_path / split / cls).mkdir(parents=True)
      for i in range(3):
        uid = study if (cls, i) == ("abd", 0) else generate_uid()
        write_dicom(tmp_path / split / cls / f"{i}.dcm", (_anatomy(rng) * 16).astype(np.uint16),
                     PatientID=f"{split}{cls}{i}", StudyInstanceUID=uid)
  report = audit.audit(tmp_path, progress=False)
  assert [(e["attribute"], e["value"]) for e in report["shared_identifiers"]] == [
      ("StudyInstanceUID", study)]
  assert report["warnings"][0].startswith("LEAKAGE: 1 DICOM StudyInstanceUID value(s)")


def test_three_classes_are_audited_by_macro_one_vs_rest_auc():
  from sklearn.metrics import roc_auc_score

  rng = np.random.default_rng(0)
  records = [{"class": c, "width": 100 * k + int(rng.integers(0, 50)),
              "noise": float(rng.normal()), "maker": "acme" if c == "c" else str(rng.choice(
                  ["x", "y"]))}
             for k, c in enumerate(("a", "b", "c")) for _ in range(8)]
  specs = [("width", "width", True), ("noise", "noise", True), ("maker", "maker", False)]
  result = shortcuts.shortcut_audit(records, specs)
  assert result["skipped"] is None and result["classes"] == ["a", "b", "c"] and result["folds"] == 5
  by_name = {f["feature"]: f for f in result["features"]}
  assert by_name["width"]["auc"] == 1.0  # each class its own range of widths
  assert "a median" in by_name["width"]["detail"] and "c median" in by_name["width"]["detail"]
  assert by_name["noise"]["auc"] < 0.7
  # The maker tells c from the rest, not a from b: its macro AUC is the mean of the three
  # one-vs-rest AUCs of the out-of-fold encoding.
  from sklearn.model_selection import StratifiedKFold

  y = np.repeat([0, 1, 2], 8)
  x = np.array([r["maker"] for r in records], object)
  scores = shortcuts._cv_scores_categorical(
      x, y, StratifiedKFold(5, shuffle=True, random_state=shortcuts.SHORTCUT_SEED))
  np.testing.assert_allclose(scores.sum(1), 1)
  want = np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(3)])
  assert by_name["maker"]["auc"] == pytest.approx(want, abs=1e-4)
  assert roc_auc_score(y == 2, scores[:, 2]) == 1.0
  warning = audit._shortcut_warning(by_name["width"], result["classes"])
  assert warning.startswith("SHORTCUT: 'width' alone predicts a vs b vs c with cross-validated "
                            "macro one-vs-rest AUC 1.000")


def test_the_shared_dataset_is_separable_by_image_size(dataset_dir):
  # All 38 chest films are exactly 512x512; 1 of the 37 abdomen films is.
  report = audit.audit(dataset_dir, progress=False)
  features = _by_feature(report)
  assert features["width x height"]["detail"] == "512x512: abd 1/37, chest 38/38"
  for name in ("width x height", "aspect ratio (width / height)", "height"):
    assert features[name]["auc"] >= shortcuts.SHORTCUT_AUC, features[name]
    assert any(w.startswith(f"SHORTCUT: '{name}'") for w in report["shortcut_warnings"])
  assert report["shortcuts"][0]["feature"] == "width x height"
  assert features["file format"]["detail"] == "constant (PNG)"
  assert report["shared_identifiers"] == []
  lines = audit.format_report(report).splitlines()
  start = next(i for i, line in enumerate(lines)
               if line.startswith("What predicts the label besides the anatomy"))
  auc = f"{features['width x height']['auc']:.3f}"
  assert lines[start + 2].split()[:4] == ["width", "x", "height", auc]
