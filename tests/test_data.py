"""Listing class folders, the tf.data pipeline, and bad input."""

import logging
import shutil

import numpy as np
import pytest

from radjax.configs import default
from radjax.data import files, images, listing, preprocess, sampling
from radjax.errors import UserError
from radjax.training import scoring
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
  folders = listing.list_folders(dataset_dir)
  assert folders.class_names == ["abd", "chest"]
  assert folders.counts() == {"train": {"abd": 32, "chest": 33}, "val": {"abd": 5, "chest": 5}}
  assert not folders.skipped
  assert all(("chest" in e.path) == (e.label == 1) for e in folders.splits["train"])


def test_split_and_class_names_are_case_insensitive_aliases(small_dataset):
  (small_dataset / "TRAIN").rename(small_dataset / "train")
  (small_dataset / "VAL").rename(small_dataset / "Validation")
  folders = listing.list_folders(small_dataset)
  assert folders.counts() == {"train": {"abd": 3, "chest": 3}, "val": {"abd": 1, "chest": 1}}


def test_same_seed_same_batches_and_val_is_never_augmented(dataset_dir):
  folders = listing.list_folders(dataset_dir)
  config = _config()
  a, b = files.Pipeline(folders, config), files.Pipeline(folders, config)
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
  val_b = list(files.Pipeline(folders, config2).eval_batches("val", 4))
  for x, y in zip(val_a, val_b):
    np.testing.assert_array_equal(x["image"], y["image"])
  tf = preprocess.tensorflow()
  first = folders.splits["val"][0].path
  plain = tf.round(preprocess.resize(tf.constant(images.read_image(first)), config)).numpy()
  np.testing.assert_allclose(val_a[0]["image"][0], plain / 127.5 - 1.0, atol=1e-6)


def test_last_eval_batch_is_padded_and_masked(dataset_dir):
  pipeline = files.Pipeline(listing.list_folders(dataset_dir), _config())
  batches = list(pipeline.eval_batches("val", 4))
  assert [b["mask"].sum() for b in batches] == [4, 4, 2]
  assert all(b["image"].shape == (4, 75, 75, 3) for b in batches)
  indices = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(indices, np.arange(10))


def test_value_ranges(small_dataset):
  folders = listing.list_folders(small_dataset)
  for value_range, (lo, hi) in (("unit", (0, 1)), ("inception", (-1, 1))):
    config = _config()
    config.value_range = value_range
    batch = next(files.Pipeline(folders, config).eval_batches("train", 6))
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
    folders = listing.list_folders(small_dataset)
  assert folders.counts()["train"] == {"abd": 3, "chest": 3}
  skipped = {p.split("/")[-1]: reason for p, reason in folders.skipped}
  assert set(skipped) == {"empty.png", "truncated.png", "text.png", "notes.txt"}
  assert "0 bytes" in skipped["empty.png"]
  for name in skipped:
    assert name in caplog.text
  assert "skipped 4 of 12 files" in caplog.text


@pytest.mark.parametrize("breakage,message", [
    ("empty_class", "no readable images in this class folder"),
    ("missing_val_class", "VAL: no 'chest' folder; every class needs images in every split"),
    ("single_class", "a classifier needs at least two"),
    ("missing_val", "no VAL folder"),
    ("unknown_val_class", "is not a class of"),
    ("no_dir", "no such data directory"),
])
def test_bad_layouts_raise_clear_errors(small_dataset, breakage, message):
  if breakage == "empty_class":
    for f in (small_dataset / "VAL" / "chest").iterdir():
      f.unlink()
  elif breakage == "missing_val_class":
    shutil.rmtree(small_dataset / "VAL" / "chest")
  elif breakage == "single_class":
    shutil.rmtree(small_dataset / "TRAIN" / "chest")
  elif breakage == "missing_val":
    shutil.rmtree(small_dataset / "VAL")
  elif breakage == "unknown_val_class":
    (small_dataset / "VAL" / "chest").rename(small_dataset / "VAL" / "pelvis")
  elif breakage == "no_dir":
    small_dataset = small_dataset / "nowhere"
  with pytest.raises(UserError, match=message):
    listing.list_folders(small_dataset)


def test_three_class_folders_are_listed_for_a_multiclass_run(small_dataset):
  for split in ("TRAIN", "VAL"):
    shutil.copytree(small_dataset / split / "chest", small_dataset / split / "pelvis")
  folders = listing.list_folders(small_dataset)
  assert folders.class_names == ["abd", "chest", "pelvis"]
  assert [e.label for e in folders.splits["val"]].count(2) == len(
      list((small_dataset / "VAL" / "pelvis").iterdir()))


def test_image_formats(tmp_path, dataset_dir):
  from PIL import Image

  gray = np.asarray(Image.open(dataset_dir / "VAL" / "abd" / "abd0.png").convert("L"))
  Image.fromarray(gray).save(tmp_path / "g8.png")
  Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
  Image.fromarray(np.stack([gray] * 3 + [np.full_like(gray, 128)], -1)).save(tmp_path / "rgba.png")
  Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
  Image.fromarray(gray).save(tmp_path / "g.jpg", quality=95)
  expected = np.repeat(gray[..., None].astype(np.float32), 3, -1)
  # A 16-bit PNG is scaled by its stored range (as DICOM without a window), not by 65535.
  lo, hi = float(gray.min()), float(gray.max())
  assert hi - lo > 200
  for name, atol in (("g8.png", 0), ("g16.png", 1e-3), ("rgba.png", 0), ("palette.png", 0),
                     ("g.jpg", 12)):
    got = images.read_image(tmp_path / name)
    if name == "g16.png":
      got = got * (hi - lo) / 255.0 + lo
    assert got.shape == expected.shape, name
    assert np.abs(got - expected).max() <= atol, name


def test_data_dir_resolution_and_offline_download(monkeypatch, tmp_path, small_dataset):
  assert listing.resolve_data_dir(str(small_dataset)) == small_dataset
  monkeypatch.setenv("RADJAX_DATA_DIR", str(small_dataset))
  assert listing.resolve_data_dir("") == small_dataset
  monkeypatch.delenv("RADJAX_DATA_DIR")
  monkeypatch.setenv("RADJAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(listing, "PUBLIC_DATASET_URL", "http://127.0.0.1:9/Open_I_abd_vs_CXRs.zip")
  with pytest.raises(UserError, match="RADJAX_DATA_DIR"):
    listing.resolve_data_dir("")


def test_class_folder_without_readable_images_shows_each_files_reason(small_dataset):
  folder = small_dataset / "VAL" / "chest"
  for f in folder.iterdir():
    f.unlink()
  (folder / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
  (folder / "notes.txt").write_text("not an image")
  with pytest.raises(UserError) as e:
    listing.list_folders(small_dataset)
  message = str(e.value)
  assert "no readable images in this class folder" in message
  assert "scan.dcm: " in message and "notes.txt: not an image file" in message
  assert "\n" not in message


def test_sub_folders_of_class_folders_are_included(small_dataset):
  """Patient folders inside a class folder: train's listing, audit and predict all see them."""
  from radjax.commands import audit

  cls = small_dataset / "TRAIN" / "abd"
  patient = cls / "patient_7" / "study_1"
  patient.mkdir(parents=True)
  source = sorted(cls.glob("*.png"))[0]
  shutil.copy(source, patient / source.name)  # same name as its source: kept apart by folder
  (cls / ".hidden").mkdir()
  shutil.copy(source, cls / ".hidden" / "ignored.png")
  folders = listing.list_folders(small_dataset)
  paths = [e.path for e in folders.splits["train"] if e.label == 0]
  assert str(patient / source.name) in paths and len(paths) == 4
  assert not any(".hidden" in p for p in paths)
  report = audit.audit(small_dataset, progress=False)
  assert report["splits"]["train"]["classes"]["abd"] == 4
  assert [str(p) for p, _ in scoring.expand([cls])] == sorted(paths)


def test_precise_bn_batches_mix_classes_and_ignore_listing_order(small_dataset):
  folders = listing.list_folders(small_dataset)
  config = _config()
  batches = list(files.Pipeline(folders, config).recalibration_batches(2))
  assert len(batches) == 3  # 6 training images, full batches only
  assert any(len(set(b["label"].tolist())) == 2 for b in batches)  # not one class per batch
  shuffled = dict(folders.splits, train=folders.splits["train"][::-1])
  permuted = listing.Folders(folders.root, folders.class_names, shuffled, folders.skipped)
  again = list(files.Pipeline(permuted, config).recalibration_batches(2))
  for x, y in zip(batches, again, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
  config.seed = 1  # the order is seeded
  other = list(files.Pipeline(folders, config).recalibration_batches(2))
  assert any(not np.array_equal(x["label"], y["label"]) for x, y in zip(batches, other))


def test_nearest_resize_is_keras_load_img_pixel_for_pixel(dataset_dir):
  from tf_keras.preprocessing.image import load_img

  config = _config(299)
  config.resize_method = "nearest"
  tf = preprocess.tensorflow()
  for path in [dataset_dir / "TRAIN" / "abd" / "abd20.png", dataset_dir / "VAL" / "chest" / "chst_val0.png"]:
    keras = np.asarray(load_img(path, target_size=(299, 299), interpolation="nearest"))
    ours = preprocess.resize(tf.constant(images.read_image(path)), config).numpy()
    np.testing.assert_array_equal(ours, keras)
  # Where the scale product lands on an integer, only Pillow's accumulated sum picks Keras' row.
  assert preprocess.keras_nearest_indices(512, 299)[149] == 255


def test_nearest_resize_batches_have_static_shapes_for_every_pass(dataset_dir):
  # hello_world resizes with "nearest": training, precise BN and (padded) validation batches.
  config = _config()
  config.resize_method = "nearest"
  pipeline = files.Pipeline(listing.list_folders(dataset_dir), config)
  val = list(pipeline.eval_batches("val", 4))
  assert [b["image"].shape for b in val] == [(4, 75, 75, 3)] * 3
  assert [int(b["mask"].sum()) for b in val] == [4, 4, 2]
  assert next(pipeline.recalibration_batches(5))["image"].shape == (5, 75, 75, 3)
  assert next(pipeline.train_batches(5, 1, 1))["image"].shape == (5, 75, 75, 3)


def test_high_bit_depth_png_equals_the_dicom_without_window_and_keeps_16_bits(tmp_path):
  from PIL import Image

  from conftest import write_dicom

  rng = np.random.default_rng(0)
  values = rng.integers(100, 3900, (80, 90)).astype(np.uint16)  # 12-bit data
  values[0, 0], values[0, 1] = 100, 3900
  Image.fromarray(values).save(tmp_path / "film.png")
  write_dicom(tmp_path / "film.dcm", values, bits_stored=12)
  png, dcm = images.read_image(tmp_path / "film.png"), images.read_image(tmp_path / "film.dcm")
  # Not 255/65535 of the stored values (a nearly black image): the stored range, as DICOM.
  assert png.max() == pytest.approx(255) and png.min() == 0
  np.testing.assert_allclose(png, dcm, atol=1e-4)
  assert images.bit_depth(tmp_path / "film.png") == 16 and images.bit_depth(tmp_path / "film.dcm") == 12
  # The cache keeps 16 bits: a 75x75 resize of the film is not rounded to whole grey levels.
  config = _config()
  config.resize = "pad"
  deep = preprocess.model_input(png, config, high_bit=True)
  shallow = preprocess.model_input(png, config, high_bit=False)
  levels = (deep + 1.0) * 127.5
  assert np.abs(levels - np.round(levels)).max() > 0.1
  assert np.abs(deep - shallow).max() <= 0.5 / 127.5 + 1e-6


def _write_manifest(root, rows, header="path,label,split"):
  path = root / "manifest.csv"
  path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
  return path


def _rows_of(folder_root):
  rows = []
  for split in ("TRAIN", "VAL"):
    for cls in ("abd", "chest"):
      for p in sorted((folder_root / split / cls).glob("*.png")):
        rows.append([p.relative_to(folder_root).as_posix(), cls, split.lower()])
  return rows


def test_a_csv_manifest_lists_like_the_class_folders(small_dataset):
  from radjax.data import datasets

  manifest = _write_manifest(small_dataset, _rows_of(small_dataset))
  from_csv, from_folders = datasets.list_dataset(manifest), listing.list_folders(small_dataset)
  assert from_csv.class_names == from_folders.class_names == ["abd", "chest"]
  for split in ("train", "val"):
    assert [(e.path, e.label, e.gray) for e in sorted(from_csv.splits[split], key=lambda e: e.path)] \
        == [(e.path, e.label, e.gray) for e in sorted(from_folders.splits[split],
                                                      key=lambda e: e.path)]
  # Without a split column, every row is in the one split asked for (cross-validation pools).
  plain = _write_manifest(small_dataset, [r[:2] for r in _rows_of(small_dataset)], "path,label")
  assert listing.list_manifest(plain, splits=("train",)).counts() == {"train": {"abd": 4, "chest": 4}}


def test_radjax_splits_manifest_trains(dataset_dir, tmp_path):
  from radjax.data import splitting

  src = tmp_path / "flat"
  for cls in ("abd", "chest"):
    (src / cls).mkdir(parents=True)
    for p in sorted((dataset_dir / "TRAIN" / cls).glob("*.png"))[:4]:
      shutil.copy(p, src / cls / p.name)
  splitting.split_dataset(src, tmp_path / "split", val=2, seed=0)
  listed = listing.list_manifest(tmp_path / "split" / splitting.MANIFEST)
  assert listed.counts() == {"train": {"abd": 3, "chest": 3}, "val": {"abd": 1, "chest": 1}}


@pytest.mark.parametrize("rows,header,message", [
    ([["TRAIN/abd/abd0.png", "abd", "train"]], "path,kind,split",
     "needs the columns path and label \\(or class\\), or path and one 1/0/blank column per "
     "label \\(two or more\\); found path, kind, split"),
    ([["TRAIN/abd/abd0.png", "", "train"]], "path,label,split", "manifest.csv:2: empty label"),
    ([["TRAIN/abd/abd0.png", "abd", "training set"]], "path,label,split",
     "manifest.csv:2: split 'training set' is not one of train, val, test"),
    ([["TRAIN/abd/abd0.png", "abd", "train"], ["TRAIN/abd/abd0.png", "chest", "train"]],
     "path,label,split", "manifest.csv:3: TRAIN/abd/abd0.png is listed again \\(first on line 2\\)"),
    ([["../abd0.png", "abd", "train"]], "path,label,split",
     "manifest.csv:2: path ../abd0.png must be relative to the CSV's folder"),
    ([["TRAIN/abd/abd0.png", "abd"]], "path,label", "no split column; train and val rows"),
    ([["TRAIN/abd/abd0.png", "abd", "train"]], "path,label,split", "found 1 label value"),
    ([["TRAIN/abd/abd0.png", "abd", "train"], ["TRAIN/chest/chst33.png", "chest", "train"],
      ["VAL/abd/abd0.png", "abd", "val"]], "path,label,split",
     "no readable chest image in split val"),
])
def test_bad_manifests_are_refused_naming_the_line(small_dataset, rows, header, message):
  with pytest.raises(UserError, match=message):
    listing.list_manifest(_write_manifest(small_dataset, rows, header))


def test_a_manifest_with_excels_byte_order_mark_lists_as_without(small_dataset):
  manifest = _write_manifest(small_dataset, _rows_of(small_dataset))
  marked = small_dataset / "excel.csv"
  marked.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())  # Excel's "CSV UTF-8"
  assert listing.list_manifest(marked).counts() == listing.list_manifest(manifest).counts()


def test_a_manifest_in_another_encoding_is_one_line_naming_it(small_dataset):
  manifest = small_dataset / "latin1.csv"
  rows = _rows_of(small_dataset) + [["TRAIN/abd/r\u00f6ntgen.png", "abd", "train"]]
  manifest.write_bytes(("path,label,split\n" + "".join(",".join(r) + "\n" for r in rows))
                       .encode("latin-1"))
  with pytest.raises(UserError, match=r"latin1.csv: not UTF-8 text \(byte \d+: b'\\xf6'\); "
                                      r"save it as UTF-8") as error:
    listing.list_manifest(manifest)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("cls,spelling,other,named", [
    ("chest", "chest", "Chest", "'Chest' and 'chest'"),
    ("abd", "1", "1.0", "'1' and '1.0'"),          # pandas writes 1.0 in a column with blanks
    ("abd", "abd ", "ABD", "'ABD' and 'abd'"),     # cells are stripped: 'abd ' is 'abd'
])
def test_labels_that_differ_only_in_spelling_are_refused(small_dataset, cls, spelling, other,
                                                         named):
  names = {"abd": "abd", "chest": "0" if spelling == "1" else "chest", cls: spelling}
  rows = [[p, names[c], s] for p, c, s in _rows_of(small_dataset)]
  next(r for r in rows if r[1] == spelling)[1] = other  # one image of the class spelt otherwise
  with pytest.raises(UserError, match=f"labels {named} differ only in case or number format"):
    listing.list_manifest(_write_manifest(small_dataset, rows))


def test_cross_validation_pools_a_manifests_splits_before_asking_for_every_class(small_dataset):
  from radjax.data import folds

  rows = [r for r in _rows_of(small_dataset) if not (r[2] == "val" and r[1] == "chest")]
  manifest = _write_manifest(small_dataset, rows)
  with pytest.raises(UserError, match="no readable chest image in split val; every class needs "
                                      "images in every split"):
    listing.list_manifest(manifest)  # training and evaluating need both classes in VAL...
  class_names, found, note = folds.labelled_images(manifest)  # ... cross-validation pools the rows
  assert class_names == ["abd", "chest"] and len(found) == len(rows) == 7
  assert note == "the train and val rows of manifest.csv"


def test_predict_says_which_files_of_a_folder_it_skips(small_dataset, caplog):
  folder = small_dataset / "VAL" / "abd"
  (folder / "scan.tif").write_bytes(b"II*\x00")
  with caplog.at_level(logging.WARNING, logger="radjax"):
    found = scoring.expand([folder])
  assert [p.name for p, _ in found] == sorted(p.name for p in folder.glob("*.png"))
  assert "skipped 1 file(s) that are not .png, .jpg, .jpeg or DICOM (scan.tif)" in caplog.text
  assert scoring.expand([folder / "scan.tif"]) == [(folder / "scan.tif", None)]  # named: tried


def test_a_missing_file_in_a_manifest_is_skipped_and_named(small_dataset, caplog):
  rows = _rows_of(small_dataset) + [["TRAIN/abd/gone.png", "abd", "train"]]
  with caplog.at_level(logging.WARNING, logger="radjax"):
    listed = listing.list_manifest(_write_manifest(small_dataset, rows))
  assert listed.counts()["train"] == {"abd": 3, "chest": 3}
  assert "gone.png: no such file (listed in the CSV)" in caplog.text
  assert "skipped 1 of 9 files" in caplog.text


def test_class_weights_balanced_explicit_and_refused():
  from radjax.training import config as config_lib

  config = _config()
  assert sampling.class_weights(config, [0, 0, 0, 1], ["a", "b"]) is None
  config.class_weight = "balanced"
  np.testing.assert_allclose(sampling.class_weights(config, [0, 0, 0, 1], ["a", "b"]),
                             [4 / 6, 2.0], rtol=1e-6)  # n / (classes * n_c), scikit-learn's
  config.class_weight = "1,3"
  np.testing.assert_array_equal(sampling.class_weights(config, [0, 1], ["a", "b"]), [1, 3])
  config.class_weight = "1,3,2"
  with pytest.raises(UserError, match="class_weight=1,3,2: 3 weights for 2 classes"):
    sampling.class_weights(config, [0, 1], ["a", "b"])
  for bad in ("heavy", "1,-2", "2"):
    config.class_weight = bad
    with pytest.raises(UserError, match=f"--config.class_weight={bad}: expected"):
      config_lib.validate(config)


def test_weighted_loss_is_keras_class_weight(small_dataset):
  """The pipeline gives each training example its class' weight; the step's loss is the weighted
  sum over the batch size (Keras' class_weight)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from radjax.training import steps

  config = _config()
  config.class_weight = "1,3"
  batch = next(files.Pipeline(listing.list_folders(small_dataset), config).train_batches(6, 1))
  np.testing.assert_array_equal(batch["weight"], np.where(batch["label"] == 1, 3.0, 1.0))

  class Linear(nn.Module):  # the smallest model train_step accepts
    @nn.compact
    def __call__(self, x, train):
      self.variable("batch_stats", "unused", jnp.zeros, ())
      return nn.Dense(1)(x.reshape(len(x), -1))[:, 0]

  model = Linear()
  variables = model.init(jax.random.key(0), batch["image"], train=False)
  state = steps.create_state(variables, optax.sgd(0.0))
  _, metrics = steps.train_step(state, batch, jax.random.key(0), model=model, tx=optax.sgd(0.0))
  logits = model.apply(variables, batch["image"], train=False)
  expected = np.mean(batch["weight"] * optax.sigmoid_binary_cross_entropy(
      logits, batch["label"].astype(np.float32)))
  assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-6)
  unweighted = dict(batch)
  del unweighted["weight"]
  _, plain = steps.train_step(state, unweighted, jax.random.key(0), model=model, tx=optax.sgd(0.0))
  assert float(plain["loss"]) != pytest.approx(float(metrics["loss"]))


def test_one_image_spelt_twice_in_a_manifest_is_refused(small_dataset):
  rows = _rows_of(small_dataset)
  rows.append(["./" + rows[0][0], rows[0][1], "val"])  # the same file, in another split
  with pytest.raises(UserError, match="manifest.csv:10: ./TRAIN/abd/.* is listed again "
                                      r"\(first on line 2\)"):
    listing.list_manifest(_write_manifest(small_dataset, rows))
  rows = _rows_of(small_dataset)
  rows[0][0] = rows[0][0].replace("/", "\\")  # Windows separators
  assert listing.list_manifest(_write_manifest(small_dataset, rows)).counts()["train"]["abd"] == 3


def test_evaluation_pipelines_need_no_training_labels_for_class_weights(small_dataset):
  config = _config()
  config.class_weight = "balanced"
  pipeline = files.Pipeline(listing.list_folders(small_dataset, splits=("val",)), config)
  assert pipeline.class_weights is None and len(list(pipeline.eval_batches("val", 2))) == 1


def test_precise_bn_batches_stream_above_their_memory_budget(small_dataset):
  import types

  from radjax.training import loop as train

  config = _config()
  pipeline = files.Pipeline(listing.list_folders(small_dataset), config)
  run = types.SimpleNamespace(config=config, steps=types.SimpleNamespace(
      on_device=lambda b, process_local=False: b))
  placed = train.recalibration_batches(run, pipeline)
  assert isinstance(placed, list) and len(placed) == 1  # 6 images, batches of 5
  config.precise_bn_cache_mb = 0
  again = train.recalibration_batches(run, pipeline)
  assert callable(again)
  np.testing.assert_array_equal(next(iter(again()))["image"], placed[0]["image"])


def test_distributed_is_initialised_before_jax_starts_its_backend(monkeypatch):
  import jax

  from radjax.training import config as config_lib

  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append("initialize"))
  real_count = jax.device_count
  monkeypatch.setattr(jax, "device_count", lambda: calls.append("device_count") or real_count())
  config_lib.load_config("smoke", ["--config.distributed=True"])
  assert calls == ["initialize", "device_count"]


def test_balanced_plan_fills_every_class_equally_and_is_a_function_of_seed_and_epoch():
  choices, seeds = sampling.balanced_plan(3, seed=0, epoch=1, count=17)
  assert sorted(np.bincount(choices)) == [5, 6, 6]  # 17 = 3 x 5 + 2 to two distinct classes
  again, same_seeds = sampling.balanced_plan(3, seed=0, epoch=1, count=17)
  np.testing.assert_array_equal(again, choices)
  np.testing.assert_array_equal(same_seeds, seeds)
  assert not np.array_equal(sampling.balanced_plan(3, seed=0, epoch=2, count=17)[0], choices)
  assert not np.array_equal(sampling.balanced_plan(3, seed=1, epoch=1, count=17)[0], choices)


def _imbalanced_dataset(root):
  """12 `blank` and 4 `marked` training films (and 2 + 2 for validation)."""
  from conftest import marker_dataset

  marker_dataset(root, {"blank": None, "marked": (5, 5, 20)}, 75, per_class=(12, 2))
  for k in range(4, 12):
    (root / "TRAIN" / "marked" / f"marked{k}.png").unlink()
  return root


def _epoch_draws(batches):
  """(label, cached image bytes, transform) of every position of one epoch's batches."""
  return [(int(label), image.tobytes(), tuple(transform)) for b in batches
          for image, label, transform in zip(b["image"], b["label"], b["transform"])]


def _check_balanced_epoch(draws):
  labels = [label for label, _, _ in draws]
  assert labels.count(0) == labels.count(1) == 8  # 16 positions, two classes
  marked = [(image, transform) for label, image, transform in draws if label == 1]
  images = [image for image, _ in marked]
  assert sorted(images.count(i) for i in set(images)) == [2, 2, 2, 2]  # each minority film twice
  assert len({transform for _, transform in marked}) == 8  # and augmented anew each time
  blank = [image for label, image, _ in draws if label == 0]
  assert len(set(blank)) == 8  # 8 of the 12 majority films, none twice


@pytest.mark.parametrize("source", ["folders", "arrays"])
def test_balanced_sampling_draws_each_class_equally_in_both_pipelines(tmp_path, source):
  from radjax.data import arrays, datasets

  root = _imbalanced_dataset(tmp_path / "data")
  config = _config()
  config.augment_on = "device"  # batches carry the cached pixels and the transforms
  config.sampling = "balanced"
  config.data_dir = str(root)
  if source == "arrays":
    arrays.export(config, tmp_path / "a.npz", datasets.list_every_split(root))
    root = tmp_path / "a.npz"
  pipeline = datasets.open_pipeline(root, config)
  assert pipeline.steps_per_epoch(4) == 4
  epochs = list(pipeline.train_batches(4, 1, 2))
  first, second = _epoch_draws(epochs[:4]), _epoch_draws(epochs[4:])
  _check_balanced_epoch(first)
  _check_balanced_epoch(second)
  assert first != second
  # A resumed run (a new pipeline from epoch 2) draws what the uninterrupted one did.
  assert _epoch_draws(datasets.open_pipeline(root, config).train_batches(4, 2)) == second


def test_balanced_sampling_refuses_class_weights_and_multilabel_data(tmp_path):
  from radjax.training import config as config_lib

  with pytest.raises(UserError, match="--config.sampling=balanced: balanced sampling and "
                                      "--config.class_weight=balanced both correct"):
    config_lib.load_config(config_lib.shipped_config("smoke"), [
        "--config.sampling=balanced", "--config.class_weight=balanced"])
  from test_multilabel import _write_multilabel_csv

  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  config = _config()
  config.sampling = "balanced"
  with pytest.raises(UserError, match="--config.sampling=balanced: balances classes; "
                                      "multilabel data has independent labels"):
    files.Pipeline(listing.list_manifest(manifest), config)


@pytest.mark.parametrize("value_range", ["inception", "unit"])
def test_the_numpy_nearest_path_is_the_tensorflow_chain_bit_for_bit(dataset_dir, value_range):
  """predict of a nearest-resize run (the paper's) skips TensorFlow: only if its pixels are the
  validation pipeline's exactly."""
  config = _config()
  config.resize_method, config.value_range, config.image_size = "nearest", value_range, 299
  rng = np.random.default_rng(0)
  cases = [(images.read_image(p), False) for p in sorted(dataset_dir.glob("VAL/*/*.png"))[:4]]
  cases.append((rng.uniform(0, 255, (317, 211, 1)).astype(np.float32), True))   # 16-bit source
  cases.append((rng.uniform(-5, 260, (120, 90, 3)).astype(np.float32), False))  # out of range
  for pixels, high_bit in cases:
    tensorflow_chain = preprocess.to_model_input(
        preprocess.cached_image(pixels, config, high_bit), value_range).numpy()
    got = preprocess.model_input(pixels, config, high_bit)
    assert got.dtype == tensorflow_chain.dtype and got.shape == tensorflow_chain.shape
    np.testing.assert_array_equal(got, tensorflow_chain)


def test_predict_of_a_nearest_resize_run_does_not_import_tensorflow(dataset_dir):
  import subprocess
  import sys

  code = f"""
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
from radjax.configs import default
from radjax.data import images, preprocess
config = default.get_config()
config.resize_method = "nearest"
pixels = images.read_image({str(sorted(dataset_dir.glob("VAL/chest/*.png"))[0])!r})
assert preprocess.model_input(pixels, config, False).shape == (299, 299, 3)
"""
  subprocess.run([sys.executable, "-c", code], check=True)


def test_an_arrays_grey_levels_are_never_guessed():
  """Integers are grey levels 0-255; floats and other ranges are stated and mapped linearly."""
  pixels_of_array = images.pixels_of_array
  grey = np.array([[0, 51, 255]], np.uint8)
  np.testing.assert_array_equal(pixels_of_array(grey), [[0.0, 51.0, 255.0]])
  assert pixels_of_array(grey).dtype == np.float32
  np.testing.assert_array_equal(pixels_of_array(grey.astype(np.int64)), [[0, 51, 255]])
  # [0, 1] floats: 0.2 of white is 51 grey levels; 12-bit 819 of 4095 is 0.2 too.
  np.testing.assert_allclose(pixels_of_array(grey / 255.0, (0, 1)), [[0, 51, 255]], atol=1e-4)
  np.testing.assert_allclose(pixels_of_array(np.array([[0, 819, 4095]], np.uint16), (0, 4095)),
                             [[0, 51, 255]], atol=0.01)
  # (-1, 1) floats: -1 black, 0 mid-grey 127.5, 1 white.
  np.testing.assert_allclose(pixels_of_array(np.array([-1.0, 0.0, 1.0]), (-1, 1)),
                             [0, 127.5, 255], atol=1e-4)
  # Stated as 0-255, floats pass through exactly (read_image's own output).
  films = np.array([[0.25, 254.75]], np.float32)
  np.testing.assert_array_equal(pixels_of_array(films, (0, 255)), films)


@pytest.mark.parametrize("array,pixel_range,message", [
    (np.full((4, 4), 0.5, np.float32), None,
     r"^image: a float32 array needs its range stated: pixel_range=\(0, 1\) for values in \[0, 1\] "
     r".*\(this one spans 0.5..0.5\)$"),
    (np.array([[0, 300]], np.uint16), None,
     r"^image: integer grey levels span 0..300, outside 0-255; state their range, e.g. "
     r"pixel_range=\(0, 4095\)"),
    (np.array([[-1, 3]], np.int16), None, r"^image: integer grey levels span -1..3, outside 0-255"),
    (np.array([[0.0, 1.5]]), (0, 1), r"^image: values span 0..1.5, outside the stated "
                                     r"pixel_range=\(0, 1\)$"),
    (np.array([[0.0, np.nan]]), (0, 1), r"^image: 1 value\(s\) are NaN or infinite$"),
    (np.zeros((2, 2), bool), None, r"^image: expected a numeric array of grey levels, got dtype "
                                   r"bool$"),
    (np.zeros((0, 3), np.uint8), None, r"^image: an empty array \(shape \(0, 3\)\)$"),
    (np.zeros((2, 2)), (1, 1), r"^pixel_range=\(1, 1\): expected finite low < high$"),
    (np.zeros((2, 2)), (1,), r"^pixel_range=\(1,\): expected \(low, high\)"),
])
def test_an_array_of_unstated_or_impossible_range_is_one_line(array, pixel_range, message):
  with pytest.raises(UserError, match=message):
    images.pixels_of_array(array, pixel_range)
