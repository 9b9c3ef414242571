"""Augmentation on the device (JAX) against TensorFlow's resampler, device-mode training and exact
resume, and training from pre-decoded .npz arrays in a process without TensorFlow."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radjax.commands import cli
from radjax.data import (acquisition, arrays, augment as aug, datasets, device_augment, files,
                         images, listing)
from radjax.training import checkpoints, config as config_lib
from radjax.data.preprocess import tensorflow
from radjax.errors import UserError
from conftest import copy_subset

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 299
PAPER = {"rotation_range": 20.0, "width_shift_range": 0.2, "height_shift_range": 0.2,
         "shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True}


@pytest.fixture(scope="module")
def shared_images(dataset_dir):
  """Six shared radiographs squashed to 299x299 gray, float [0, 255] (what training augments)."""
  tf = tensorflow()
  paths = sorted((dataset_dir / "TRAIN" / "abd").glob("*.png"))[:3] + \
      sorted((dataset_dir / "TRAIN" / "chest").glob("*.png"))[:3]
  return np.stack([tf.image.resize(images.read_image(p)[..., :1], [SIZE, SIZE]).numpy()
                   for p in paths]).astype(np.float32)


def _augment_config(only=None, **extra):
  config = config_lib.default_config().augment
  for key, value in PAPER.items():
    config[key] = value if only in (None, key) else (False if key == "horizontal_flip" else 0.0)
  config.update(extra)
  return config


def _both(shared, transforms, fill_mode, interpolation):
  tf = tensorflow()
  expected = aug.apply_transforms(tf.constant(shared), tf.constant(transforms), fill_mode,
                                  interpolation).numpy()
  got = np.asarray(jax.jit(device_augment.apply_transforms, static_argnums=(2, 3))(
      shared, transforms, fill_mode, interpolation))
  return got, expected


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect"])
@pytest.mark.parametrize("only", [*PAPER, None])  # each of the paper's parameters, then all
def test_device_resampling_matches_tensorflow_for_every_paper_parameter(shared_images, only,
                                                                        fill_mode):
  config = _augment_config(only)
  transforms = aug.epoch_transforms(0, 1, len(shared_images), config, SIZE, SIZE)
  got, expected = _both(shared_images, transforms, fill_mode, "bilinear")
  assert np.abs(got - expected).max() <= 1.0  # grey levels
  assert np.abs(got - expected).mean() < 1e-3
  assert not np.array_equal(expected, shared_images)  # the transform did something


def test_far_outside_coordinates_fold_like_tensorflow(shared_images):
  """Shifts of several image widths, both signs: the reflect fold over more than one period."""
  params = {"theta": np.array([0.3, -0.2, 1.0, 0.0, 0.0, 2.0]),
            "tx": np.array([2.7, -3.4, 0.5, -0.9, 5.2, -1.5]) * SIZE,
            "ty": np.array([-2.2, 1.6, -4.1, 0.0, 0.3, 3.3]) * SIZE,
            "shear": np.zeros(6), "zx": np.array([1, 3, 0.5, 1, 2, 1.0]),
            "zy": np.array([1, 2, 0.7, 1, 1, 4.0]), "flip": np.array([0, 1, 0, 1, 0, 1], bool)}
  transforms = aug.to_transforms(aug.affine_matrix(params, SIZE, SIZE))
  for fill_mode in ("reflect", "nearest"):
    got, expected = _both(shared_images, transforms, fill_mode, "bilinear")
    assert np.abs(got - expected).max() <= 1.0, fill_mode


def test_nearest_interpolation_picks_the_same_pixels(shared_images):
  transforms = aug.epoch_transforms(3, 2, len(shared_images), _augment_config(), SIZE, SIZE)
  got, expected = _both(shared_images, transforms, "nearest", "nearest")
  # Float rounding may move a coordinate that lies within 1e-5 of a half-pixel boundary.
  assert np.mean(got == expected) > 0.9999


@pytest.fixture(scope="module")
def tiny_data(dataset_dir, tmp_path_factory):
  return copy_subset(dataset_dir, tmp_path_factory.mktemp("tiny"), {"TRAIN": 5, "VAL": 2})


def _args(data_dir, jit_cache, *extra):
  return ["--config", str(REPO / "configs" / "smoke.py"), f"--config.data_dir={data_dir}",
          f"--config.compilation_cache={jit_cache}", "--config.augment_on=device", *extra]


ACQUISITION = ("--config.augment.framing.probability=0.6", "--config.augment.overlays.probability=0.6",
               "--config.augment.intensity.probability=0.6")


@pytest.mark.parametrize("extra", [(), ACQUISITION], ids=["keras", "keras+acquisition"])
def test_device_mode_batches_equal_host_mode_batches(tiny_data, jit_cache, extra):
  """The same pipeline epoch: host-augmented floats vs cached integers augmented on the device
  (with acquisition augmentation: NumPy on the host, JAX on the device)."""
  host = config_lib.load_config("smoke", _args(tiny_data, jit_cache)[2:-1] + list(extra))
  device = config_lib.load_config("smoke", _args(tiny_data, jit_cache)[2:] + list(extra))
  folders = listing.list_folders(tiny_data)
  # One device-mode pipeline over epochs 1-2 (what training and a resume iterate) gives each
  # epoch's batches: with the step's determinism (the arrays test), device mode resumes exactly.
  spanning = list(files.Pipeline(folders, device).train_batches(5, 1, 2))
  per_epoch = [b for epoch in (1, 2) for b in files.Pipeline(folders, device).train_batches(5, epoch)]
  for a, b in zip(spanning, per_epoch, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  for epoch in (1, 2):
    host_batches = list(files.Pipeline(folders, host).train_batches(5, epoch))
    device_batches = list(files.Pipeline(folders, device).train_batches(5, epoch))
    assert len(host_batches) == len(device_batches) == 2
    for h, d in zip(host_batches, device_batches):
      assert d["image"].dtype == np.uint8
      assert d["transform"].shape == (5, 8 + (acquisition.WIDTH if extra else 0))
      np.testing.assert_array_equal(h["label"], d["label"])
      prepared = device_augment.model_input(d, augment=device.augment,
                                            value_range=device.value_range)
      assert prepared.shape == h["image"].shape
      assert np.abs(np.asarray(prepared) - h["image"]).max() <= 1 / 127.5  # one grey level
  if extra:  # the acquisition augmentation did change the films
    plain = config_lib.load_config("smoke", _args(tiny_data, jit_cache)[2:-1])
    batch = next(files.Pipeline(folders, plain).train_batches(5, 1))
    changed = next(files.Pipeline(folders, host).train_batches(5, 1))
    assert np.mean(np.abs(batch["image"] - changed["image"]).max(axis=(1, 2, 3)) > 0.1) >= 0.6


def _final(workdir):
  variables, _, epoch = checkpoints.load_for_inference(workdir, "latest")
  return variables, epoch


def _assert_same_run(a, b):
  (va, ea), (vb, eb) = _final(a), _final(b)
  assert ea == eb == 2
  for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb), strict=True):
    np.testing.assert_array_equal(x, y)
  load = lambda w: [json.loads(l) for l in (w / "metrics.jsonl").read_text().splitlines()]
  for x, y in zip(load(a), load(b), strict=True):
    for key in ("loss", "accuracy", "val_loss", "val_auc"):
      assert x[key] == y[key], key


NO_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
from radjax.commands import cli
code = cli.main(sys.argv[1:])
assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules if sys.modules[m]), "TF loaded"
sys.exit(code)
"""


@pytest.mark.slow
def test_arrays_train_without_tensorflow_and_resume_exactly(tiny_data, jit_cache, tmp_path, capsys):
  npz = tmp_path / "tiny.npz"
  assert cli.main(["export-arrays", "--out", str(npz), *_args(tiny_data, jit_cache)]) == 0
  assert "Wrote" in capsys.readouterr().out
  loaded = arrays.load(npz)
  assert loaded.images["train"].shape == (10, 75, 75, 3) and loaded.images["train"].dtype == np.uint8
  assert loaded.class_names == ["abd", "chest"] and list(loaded.labels["val"]) == [0, 0, 1, 1]
  # (3 channels: the shared PNGs are RGB with slightly different channels.) The arrays are the
  # pipeline's cache: its un-augmented validation input, pixel for pixel.
  config = config_lib.load_config("smoke", _args(npz, jit_cache)[2:])
  folders_batch = next(files.Pipeline(listing.list_folders(tiny_data), config).eval_batches("val", 4))
  arrays_batch = next(arrays.ArrayPipeline(loaded, config).eval_batches("val", 4))
  np.testing.assert_array_equal(folders_batch["image"], arrays_batch["image"])

  without_tf = tmp_path / "without_tf"
  result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "train", "--workdir",
                           str(without_tf), *_args(npz, jit_cache)],
                          capture_output=True, text=True, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = tmp_path / "resumed"
  args = ["train", "--workdir", str(resumed), *_args(npz, jit_cache)]
  assert cli.main(args + ["--config.num_epochs=1"]) == 0
  assert cli.main(args) == 0
  _assert_same_run(without_tf, resumed)
  assert cli.main(["evaluate", "--workdir", str(resumed)]) == 0  # evaluates from the arrays too


def test_arrays_bad_inputs_are_named(tiny_data, jit_cache, tmp_path):
  npz = tmp_path / "a.npz"
  base = _args(tiny_data, jit_cache)[2:]
  arrays.export(config_lib.load_config("smoke", base), npz,
                datasets.list_every_split(tiny_data))
  loaded = arrays.load(npz)
  with pytest.raises(UserError, match=r"--config.image_size=99: .*a.npz was decoded with "
                                      r"image_size=75"):
    arrays.ArrayPipeline(loaded, config_lib.load_config("smoke", base + ["--config.image_size=99"]))
  with pytest.raises(UserError, match=r"--config.crop_borders=auto: .*a.npz was decoded with "
                                      r"crop_borders=off"):
    arrays.ArrayPipeline(loaded, config_lib.load_config("smoke", base + ["--config.crop_borders=auto"]))
  # A file written before crop_borders existed was decoded without cropping: accepted as "off".
  del loaded.settings["crop_borders"]
  arrays.ArrayPipeline(loaded, config_lib.load_config("smoke", base))
  with pytest.raises(UserError, match="crop_borders=off"):
    arrays.ArrayPipeline(loaded, config_lib.load_config("smoke", base + ["--config.crop_borders=auto"]))
  with pytest.raises(UserError, match="--config.augment_on=host: training from .* set "
                                      "--config.augment_on=device"):
    arrays.ArrayPipeline(loaded, config_lib.load_config("smoke", base[:-1]))
  (tmp_path / "other.npz").write_bytes(b"not an npz")
  with pytest.raises(UserError, match="other.npz: unreadable arrays file"):
    arrays.load(tmp_path / "other.npz")
  with pytest.raises(UserError, match="no such arrays file"):
    arrays.load(tmp_path / "missing.npz")
  with pytest.raises(UserError, match="--out .*x.zip: expected a .npz file"):
    arrays.export(config_lib.load_config("smoke", base), tmp_path / "x.zip",
                  datasets.list_every_split(tiny_data))


def test_export_arrays_reads_a_csv_manifest(tiny_data, jit_cache, tmp_path):
  rows = [f"{p.relative_to(tiny_data).as_posix()},{p.parent.name},{p.parent.parent.name.lower()}"
          for p in sorted(tiny_data.rglob("*.png"))]
  manifest = tiny_data / "labels.csv"
  manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
  npz = tmp_path / "from_csv.npz"
  assert cli.main(["export-arrays", "--out", str(npz), *_args(manifest, jit_cache)]) == 0
  loaded = arrays.load(npz)
  assert {s: len(v) for s, v in loaded.labels.items()} == {"train": 10, "val": 4}
  folders_npz = tmp_path / "from_folders.npz"
  assert cli.main(["export-arrays", "--out", str(folders_npz), *_args(tiny_data, jit_cache)]) == 0
  np.testing.assert_array_equal(loaded.images["val"], arrays.load(folders_npz).images["val"])
