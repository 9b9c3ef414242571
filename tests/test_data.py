"""Listing class folders, the tf.data pipeline, and bad input."""

import logging
import shutil

import numpy as np
import pytest

from configs import default
from radjax import data, images
from radjax.errors import UserError
from conftest import copy_subset


def _config(size=75):
  config = default.get_config()
  config.image_size = size
  return config


@pytest.fixture
def small_dataset(dataset_dir, tmp_path):
  """A copy of 3 + 3 training and 1 + 1 validation images of the real dataset."""
  return copy_subset(dataset_dir, tmp_path / "data", {"TRAIN": 3, "VAL": 1})


def test_lists_the_shared_dataset(dataset_dir):
  folders = data.list_folders(dataset_dir)
  assert folders.class_names == ["abd", "chest"]
  assert folders.counts() == {"train": {"abd": 32, "chest": 33}, "val": {"abd": 5, "chest": 5}}
  assert not folders.skipped
  assert all(("chest" in e.path) == (e.label == 1) for e in folders.splits["train"])


def test_split_and_class_names_are_case_insensitive_aliases(small_dataset):
  (small_dataset / "TRAIN").rename(small_dataset / "train")
  (small_dataset / "VAL").rename(small_dataset / "Validation")
  folders = data.list_folders(small_dataset)
  assert folders.counts() == {"train": {"abd": 3, "chest": 3}, "val": {"abd": 1, "chest": 1}}


def test_same_seed_same_batches_and_val_is_never_augmented(dataset_dir):
  folders = data.list_folders(dataset_dir)
  config = _config()
  a, b = data.Pipeline(folders, config), data.Pipeline(folders, config)
  batches_a = list(a.train_batches(5, 3))
  batches_b = list(b.train_batches(5, 3))
  assert len(batches_a) == 13
  for x, y in zip(batches_a, batches_b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  other_epoch = list(a.train_batches(5, 4))
  assert not np.array_equal(other_epoch[0]["image"], batches_a[0]["image"])
  # One pipeline over epochs 2..4 (what training iterates) gives exactly those epochs' batches,
  # so a run resumed at epoch 3 sees what an uninterrupted one sees.
  spanning = list(a.train_batches(5, 2, 4))
  assert len(spanning) == 39
  for x, y in zip(spanning[13:], batches_a + other_epoch, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  # Validation: identical whatever the seed, equal to the plain decoded + resized image.
  config2 = _config()
  config2.seed = 123
  val_a = list(a.eval_batches("val", 4))
  val_b = list(data.Pipeline(folders, config2).eval_batches("val", 4))
  for x, y in zip(val_a, val_b):
    np.testing.assert_array_equal(x["image"], y["image"])
  tf = data.tensorflow()
  first = folders.splits["val"][0].path
  plain = tf.round(data.resize(tf.constant(images.read_image(first)), config)).numpy()
  np.testing.assert_allclose(val_a[0]["image"][0], plain / 127.5 - 1.0, atol=1e-6)


def test_last_eval_batch_is_padded_and_masked(dataset_dir):
  pipeline = data.Pipeline(data.list_folders(dataset_dir), _config())
  batches = list(pipeline.eval_batches("val", 4))
  assert [b["mask"].sum() for b in batches] == [4, 4, 2]
  assert all(b["image"].shape == (4, 75, 75, 3) for b in batches)
  indices = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(indices, np.arange(10))


def test_value_ranges(small_dataset):
  folders = data.list_folders(small_dataset)
  for value_range, (lo, hi) in (("unit", (0, 1)), ("inception", (-1, 1))):
    config = _config()
    config.value_range = value_range
    batch = next(data.Pipeline(folders, config).eval_batches("train", 6))
    assert batch["image"].min() >= lo and batch["image"].max() <= hi
    assert batch["image"].max() - batch["image"].min() > 0.8 * (hi - lo)


def test_bad_files_are_skipped_and_named(small_dataset, caplog):
  cls = small_dataset / "TRAIN" / "abd"
  (cls / "empty.png").write_bytes(b"")
  good = next(cls.glob("*.png")).read_bytes()
  (cls / "truncated.png").write_bytes(good[: len(good) // 3])
  (cls / "text.png").write_text("this is not a picture")
  (cls / "notes.txt").write_text("a note left in a class folder")
  with caplog.at_level(logging.WARNING, logger="radjax"):
    folders = data.list_folders(small_dataset)
  assert folders.counts()["train"] == {"abd": 3, "chest": 3}
  skipped = {p.split("/")[-1]: reason for p, reason in folders.skipped}
  assert set(skipped) == {"empty.png", "truncated.png", "text.png", "notes.txt"}
  assert "0 bytes" in skipped["empty.png"]
  for name in skipped:
    assert name in caplog.text
  assert "skipped 4 of 12 files" in caplog.text


@pytest.mark.parametrize("breakage,message", [
    ("empty_class", "no readable images in this class folder"),
    ("single_class", "a classifier needs at least two"),
    ("missing_val", "no VAL folder"),
    ("unknown_val_class", "is not a class of"),
    ("no_dir", "no such data directory"),
])
def test_bad_layouts_raise_clear_errors(small_dataset, breakage, message):
  if breakage == "empty_class":
    for f in (small_dataset / "VAL" / "chest").iterdir():
      f.unlink()
  elif breakage == "single_class":
    shutil.rmtree(small_dataset / "TRAIN" / "chest")
  elif breakage == "missing_val":
    shutil.rmtree(small_dataset / "VAL")
  elif breakage == "unknown_val_class":
    (small_dataset / "VAL" / "chest").rename(small_dataset / "VAL" / "pelvis")
  elif breakage == "no_dir":
    small_dataset = small_dataset / "nowhere"
  with pytest.raises(UserError, match=message):
    data.list_folders(small_dataset)


def test_image_formats(tmp_path, dataset_dir):
  from PIL import Image

  gray = np.asarray(Image.open(dataset_dir / "VAL" / "abd" / "abd0.png").convert("L"))
  Image.fromarray(gray).save(tmp_path / "g8.png")
  Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
  Image.fromarray(np.stack([gray] * 3 + [np.full_like(gray, 128)], -1)).save(tmp_path / "rgba.png")
  Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
  Image.fromarray(gray).save(tmp_path / "g.jpg", quality=95)
  expected = np.repeat(gray[..., None].astype(np.float32), 3, -1)
  for name, atol in (("g8.png", 0), ("g16.png", 1e-3), ("rgba.png", 0), ("palette.png", 0),
                     ("g.jpg", 12)):
    got = images.read_image(tmp_path / name)
    assert got.shape == expected.shape, name
    assert np.abs(got - expected).max() <= atol, name


def test_data_dir_resolution_and_offline_download(monkeypatch, tmp_path, small_dataset):
  assert data.resolve_data_dir(str(small_dataset)) == small_dataset
  monkeypatch.setenv("RADJAX_DATA_DIR", str(small_dataset))
  assert data.resolve_data_dir("") == small_dataset
  monkeypatch.delenv("RADJAX_DATA_DIR")
  monkeypatch.setenv("RADJAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(data, "PUBLIC_DATASET_URL", "http://127.0.0.1:9/Open_I_abd_vs_CXRs.zip")
  with pytest.raises(UserError, match="RADJAX_DATA_DIR"):
    data.resolve_data_dir("")
