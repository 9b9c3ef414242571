"""`radjax prepare`: a dataset decoded once into a TFDS dataset on disk; trained from in memory
when it fits `cache_mb`, else streamed with a bounded shuffle buffer."""

import json
import pathlib

import numpy as np
import pytest

from radjax.commands import cli
from radjax.configs import default
from radjax.data import datasets, files, listing, prepared
from radjax.errors import UserError

SIZE = 75


def _config(**settings):
  config = default.get_config()
  config.image_size = SIZE
  for key, value in settings.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def prepared_dir(dataset_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("prepared") / "hello75"
  assert cli.main(["prepare", "--config", "smoke", str(dataset_dir), str(out),
                   f"--config.image_size={SIZE}"]) == 0
  return out


def test_prepare_writes_a_tfds_dataset_with_the_pipelines_own_pixels(prepared_dir, dataset_dir,
                                                                     capsys):
  import tensorflow_datasets as tfds

  index = json.loads((prepared_dir / prepared.INDEX).read_text())
  assert index["class_names"] == ["abd", "chest"] and not index["multilabel"]
  assert index["settings"]["image_size"] == SIZE and index["channels"] == 3  # 19 RGB files
  builder = tfds.builder_from_directory(str(prepared_dir / prepared.NAME / prepared.VERSION))
  assert builder.info.splits["train"].num_examples == 65
  assert builder.info.splits["val"].num_examples == 10
  assert set(builder.info.features) == {"image", "label", "index", "path", "patient_id"}
  # The same decoded, resized, quantized images, labels and order as training from the folders.
  config = _config()
  ours = prepared.PreparedPipeline(prepared_dir, config)
  folders = files.Pipeline(listing.list_folders(dataset_dir), config)
  assert not ours.streaming and ours.counts() == folders.counts()
  for split in ("train", "val"):
    for (a, la, ia), (b, lb, ib) in zip(ours.cached(split), folders.cached(split),
                                        strict=True):
      np.testing.assert_array_equal(a, b)
      assert (la, ia) == (lb, ib)


@pytest.mark.slow
def test_training_from_a_prepared_dataset_equals_training_from_the_folders(prepared_dir,
                                                                          dataset_dir, tmp_path):
  from conftest import train_smoke

  settings = (f"--config.image_size={SIZE}", "--config.num_epochs=1", "--config.batch_size=13")
  train_smoke(dataset_dir, tmp_path / "folders", *settings)
  train_smoke(prepared_dir, tmp_path / "prepared", *settings)

  def losses(run):
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return record["loss"], record["val_loss"], record["val_accuracy"]

  assert losses(tmp_path / "prepared") == losses(tmp_path / "folders")


def _epoch_images(pipeline, epoch):
  return sorted(image.tobytes() for b in pipeline.train_batches(5, epoch)
                for image in b["image"])


def test_a_dataset_above_the_memory_budget_streams_every_image_once_per_epoch(prepared_dir,
                                                                           capsys):
  config = _config(cache_mb=0, shuffle_buffer=8, augment_on="device")
  pipeline = prepared.PreparedPipeline(prepared_dir, config)
  assert pipeline.streaming and pipeline.shuffle_buffer("train") == 8
  assert "streams from disk" in capsys.readouterr().out
  cached = prepared.PreparedPipeline(prepared_dir, _config(augment_on="device"))
  everything = sorted(image.tobytes() for image, _, _ in cached.cached("train"))
  first = [b["image"] for b in pipeline.train_batches(5, 1)]
  assert len(first) == 13  # 65 images: every one of them once, none twice
  assert sorted(i.tobytes() for b in first for i in b) == everything
  # Deterministic per (seed, epoch), and another epoch is another order.
  again = [b["image"] for b in prepared.PreparedPipeline(prepared_dir, config).train_batches(5, 1)]
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  second = [b["image"] for b in pipeline.train_batches(5, 2)]
  assert not all(np.array_equal(a, b) for a, b in zip(first, second))
  # Evaluation streams too, in path order, as the cached pipeline serves it.
  for x, y in zip(pipeline.eval_batches("val", 4), cached.eval_batches("val", 4), strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])


def test_a_streamed_dataset_gives_each_process_its_own_share_of_the_files(prepared_dir):
  config = _config(cache_mb=0, shuffle_buffer=8, augment_on="device")
  pipeline = prepared.PreparedPipeline(prepared_dir, config)
  cached = prepared.PreparedPipeline(prepared_dir, _config(augment_on="device"))
  index_of = {image.tobytes(): int(i) for image, _, i in cached.cached("train")}
  seen = []
  for process, (start, stop) in enumerate([(0, 33), (33, 65)]):  # 65 images, 2 processes
    batches = list(pipeline.train_batches(4, 1, shard=(process, 2)))
    assert len(batches) == 16 and all(b["image"].shape[0] == 2 for b in batches)
    mine = [index_of[image.tobytes()] for b in batches for image in b["image"]]
    assert all(start <= i < stop for i in mine)  # only its own slice of the files
    seen += mine
    recalibration = list(pipeline.recalibration_batches(4, shard=(process, 2)))
    assert len(recalibration) == 16  # 65 // 4 global batches, two rows of them each
    assert all(start <= i < stop for b in recalibration for i in b["index"])
  assert len(seen) == len(set(seen)) == 64  # one epoch: no image twice, 16 steps of 4
  # Evaluation: each process streams its contiguous half of the split, in path order.
  parts = [list(pipeline.eval_batches("val", 4, shard=(i, 2))) for i in range(2)]
  assert [np.concatenate([b["index"][b["mask"]] for b in part]).tolist() for part in parts] == \
      [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_bad_prepare_and_training_settings_are_one_line(prepared_dir, dataset_dir, tmp_path,
                                                        capsys):
  def refused(argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err

  assert refused(["prepare", "--config", "smoke", str(dataset_dir), str(prepared_dir)]) == (
      f"radjax prepare: error: {prepared_dir}: exists and is not an empty folder; prepare into "
      "a new one")
  assert refused(["prepare", "--config", "smoke", str(tmp_path / "none"), str(tmp_path / "o")]) \
      == f"radjax prepare: error: {tmp_path / 'none'}: no such folder or CSV file"
  assert refused(["prepare", "--config", "smoke", str(prepared_dir), str(tmp_path / "o")]) == (
      f"radjax prepare: error: {prepared_dir}: is already a prepared dataset; train from it")
  with pytest.raises(UserError, match=f"--config.image_size=299: {prepared_dir} was prepared "
                                      f"with image_size=75; use that, or prepare it again"):
    datasets.open_pipeline(prepared_dir, _config(image_size=299))
  with pytest.raises(UserError, match="has no test split"):
    datasets.open_pipeline(prepared_dir, _config(), splits=("test",))
  assert refused(["prepare", "--config", "smoke", str(dataset_dir), str(tmp_path / "no" / "o")]) \
      == f"radjax prepare: error: {tmp_path / 'no' / 'o'}: no such folder {tmp_path / 'no'}/"
  view = tmp_path / "view"
  prepared.write_view(prepared_dir, view, {"train": [("train", 0), ("val", 1)], "val": []})
  index = json.loads((view / prepared.INDEX).read_text())
  assert index["splits"]["train"] == [["train", 0], ["val", 1]]
  index["prepared"] = str(tmp_path / "gone")
  (view / prepared.INDEX).write_text(json.dumps(index))
  with pytest.raises(UserError, match=f"^{view}: a view of the prepared dataset "
                                      f"{tmp_path / 'gone'}, which is gone$"):
    datasets.open_pipeline(view, _config())
  other = tmp_path / "other"
  other.mkdir()
  (other / prepared.INDEX).write_text(json.dumps({"format": "something-else"}))
  with pytest.raises(UserError, match=f"^{other}: not a dataset written by `radjax prepare` "
                                      f"\\(radjax.json format 'something-else'\\)$"):
    datasets.open_pipeline(other, _config())


def test_a_multilabel_manifest_prepares_with_its_label_vectors(tmp_path):
  from test_multilabel import LABELS, _write_multilabel_csv

  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  out = tmp_path / "prepared"
  config = _config()
  prepared.prepare(config, datasets.list_every_split(manifest), out, progress=False)
  pipeline = datasets.open_pipeline(out, config)
  listed = listing.list_manifest(manifest)
  assert pipeline.multilabel and pipeline.class_names == list(LABELS)
  assert pipeline.counts() == listed.counts()
  want = {e.path: e.label for e in listed.splits["val"]}
  got = [tuple(label) for _, label, _ in pipeline.cached("val")]
  assert got == [want[p] for p in sorted(want)]


def test_a_multilabel_prepared_dataset_folds_into_views_with_its_label_vectors(tmp_path):
  """radjax cv of a prepared findings dataset: the plan holds each image's label vector (as the
  CSV's), and each fold is a view whose splits carry them (what training and the held-out
  predictions read)."""
  from test_multilabel import _write_multilabel_csv

  from radjax.data import folds as folds_lib
  from radjax.training import cross_validation as cv_lib

  manifest = _write_multilabel_csv(tmp_path, per_split=(12, 4))
  out = tmp_path / "prepared"
  config = _config()
  prepared.prepare(config, datasets.list_every_split(manifest), out, progress=False)
  plan = folds_lib.make_plan(out, 2, [0])
  from_csv = folds_lib.make_plan(manifest, 2, [0])
  assert plan["prepared"] and not from_csv["prepared"]
  by_path = dict(zip(from_csv["paths"], from_csv["labels"]))
  source = {e.path: e for split in listing.list_manifest(manifest).splits.values() for e in split}
  assert len(plan["paths"]) == 16 and all(isinstance(v, list) for v in plan["labels"])
  for path, label in zip(plan["paths"], plan["labels"]):  # the source paths, the CSV's labels
    assert label == list(source[path].label)
    assert by_path[pathlib.Path(path).relative_to(manifest.parent).as_posix()] == label
  fold_of = plan["assignment"]["0"]
  for fold in (1, 2):
    view = cv_lib._fold_data(plan, "0", fold, tmp_path / f"fold_{fold}")
    assert prepared.is_prepared(view)
    pipeline = datasets.open_pipeline(view, config)
    assert pipeline.multilabel
    for split, held in (("val", True), ("train", False)):
      want = {p: tuple(lab) for p, lab, f in zip(plan["paths"], plan["labels"], fold_of)
              if (f == fold) == held}
      assert {e.path: e.label for e in pipeline.examples[split]} == want


def test_patient_ids_are_a_feature_from_the_manifest_else_the_dicom_header(dataset_dir,
                                                                           tmp_path):
  import csv
  import shutil

  import tensorflow_datasets as tfds
  from conftest import write_dicom

  rows = [["path", "label", "patient_id", "split"]]
  for split, n in (("train", 2), ("val", 1)):
    for label in ("abd", "chest"):
      for src in sorted((dataset_dir / split.upper() / label).glob("*.png"))[:n]:
        shutil.copy(src, tmp_path / f"{split}_{src.name}")
        rows.append([f"{split}_{src.name}", label, f"P-{split}-{src.stem}", split])
  pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
  write_dicom(tmp_path / "film.dcm", pixels, PatientID="DICOM-7")
  write_dicom(tmp_path / "other.dcm", pixels, PatientID="DICOM-8")
  rows += [["film.dcm", "chest", "", "train"], ["other.dcm", "abd", "P-cell", "train"]]
  manifest = tmp_path / "films.csv"
  with manifest.open("w", newline="") as f:
    csv.writer(f).writerows(rows)
  out = tmp_path / "prepared"
  config = _config()
  prepared.prepare(config, datasets.list_every_split(manifest), out, progress=False)
  builder = tfds.builder_from_directory(str(out / prepared.NAME / prepared.VERSION))
  got = {e["path"].decode(): e["patient_id"].decode()
         for e in tfds.as_numpy(builder.as_dataset(split="train"))}
  want = {str(tmp_path / r[0]): r[2] for r in rows[1:] if r[3] == "train"}
  want[str(tmp_path / "film.dcm")] = "DICOM-7"  # no cell: the DICOM Patient ID
  assert got == want  # "other.dcm": the manifest's cell wins over its header
  pipeline = datasets.open_pipeline(out, config)
  assert {e.path: e.patient_id for e in pipeline.examples["train"]} == want
  index = json.loads((out / prepared.INDEX).read_text())
  index["format"] = "radjax-prepared-1"
  (out / prepared.INDEX).write_text(json.dumps(index))
  with pytest.raises(UserError, match=f"^{out}: written by an older `radjax prepare` "
                                      "\\(no patient ids\\); prepare it again$"):
    datasets.open_pipeline(out, config)


def test_the_tutorial_dataset_builds_offline_from_an_extracted_copy(dataset_dir, tmp_path):
  import tensorflow_datasets as tfds
  from PIL import Image

  from radjax.data.tfds_open_i import OpenIAbdVsCxr

  assert "open_i_abd_vs_cxr" in tfds.list_builders()
  builder = OpenIAbdVsCxr(data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(dataset_dir)))
  assert builder.info.splits["train"].num_examples == 65
  assert builder.info.splits["validation"].num_examples == 10
  examples = list(tfds.as_numpy(builder.as_dataset(split="validation")))
  assert sorted(e["path"].decode() for e in examples) == sorted(
      f"{c}/{p.name}" for c in ("abd", "chest") for p in (dataset_dir / "VAL" / c).glob("*.png"))
  for e in examples:
    path = e["path"].decode()
    assert e["label"] == (0 if path.startswith("abd/") else 1)
    np.testing.assert_array_equal(
        e["image"], np.asarray(Image.open(dataset_dir / "VAL" / path).convert("RGB")))


def test_the_tutorial_dataset_builds_from_its_archive_downloaded(dataset_dir, tmp_path,
                                                                 monkeypatch):
  """The download path, served from localhost: the archive (here zipped from the shared copy,
  in a top folder as the tutorial's) is fetched, extracted and built; TFDS records the archive's
  checksum it computed (none is registered to check it against)."""
  import functools
  import hashlib
  import http.server
  import threading
  import zipfile

  import tensorflow_datasets as tfds

  from radjax.data import tfds_open_i

  served = tmp_path / "served"
  served.mkdir()
  with zipfile.ZipFile(served / "Open_I_abd_vs_CXRs.zip", "w") as z:
    for path in sorted(dataset_dir.rglob("*.png")):
      z.write(path, "Open_I_abd_vs_CXRs/" + path.relative_to(dataset_dir).as_posix())
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
      http.server.SimpleHTTPRequestHandler, directory=str(served)))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f"http://127.0.0.1:{server.server_port}/Open_I_abd_vs_CXRs.zip"
    monkeypatch.setattr(listing, "PUBLIC_DATASET_URL", url)
    builder = tfds_open_i.OpenIAbdVsCxr(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_dir=str(tmp_path / "downloads"))
  finally:
    server.shutdown()
  assert builder.info.splits["train"].num_examples == 65
  assert builder.info.splits["validation"].num_examples == 10
  labels = [int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split="train"))]
  assert sorted(labels) == [0] * 32 + [1] * 33
  # The archive's SHA-256 as TFDS computed it (what register_checksums would commit).
  (info,) = (tmp_path / "downloads").rglob("*.zip.INFO")
  recorded = json.loads(info.read_text())["url_info"]
  archive = (served / "Open_I_abd_vs_CXRs.zip").read_bytes()
  assert recorded["checksum"] == hashlib.sha256(archive).hexdigest()
  assert recorded["size"] == len(archive)
