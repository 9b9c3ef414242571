"""Shared fixtures. TensorFlow/Keras are imported lazily, inside the fixtures that need them."""

import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# As flax' examples test: XLA's optimisation passes cost more than they save on smoke-size runs
# (a third of the compile time). Subprocesses inherit it. The numerical parity tests against
# Keras and TensorFlow switch it off (`optimized_xla`), so they check what users run.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

DATASET = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "open_i_abd_vs_cxr"


def pytest_addoption(parser):
  parser.addoption(
      "--learning-seed", type=int, default=0,
      help="seed of the learning tests' data and training (default 0). Their margins were set "
           "over seeds 0-4: scripts/learning_margins.py runs them over seeds and tabulates what "
           "each recorded")


@pytest.fixture(scope="session")
def learning_seed(request):
  """The seed a learning test draws its data and trains with (`--learning-seed`)."""
  return request.config.getoption("--learning-seed")


@pytest.fixture(scope="session", autouse=True)
def jit_cache(tmp_path_factory):
  """One JAX persistent compilation cache for the whole session: every `run.load` or `build` jits
  new functions, and the many tests that compile the same smoke-size model then compile it once."""
  import jax

  directory = str(tmp_path_factory.mktemp("jax_cache"))
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  return directory


@pytest.fixture
def optimized_xla():
  """The XLA programs users run, optimisation passes on, for one test."""
  import jax

  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="session")
def dataset_dir():
  if not DATASET.is_dir():
    pytest.fail(f"shared dataset missing at {DATASET}")
  return DATASET


def copy_subset(dataset_dir, root, per_class: dict[str, int]):
  """Copies the first `per_class[split]` images of each class of the real dataset under `root`."""
  import shutil

  for split, count in per_class.items():
    for name in ("abd", "chest"):
      (root / split / name).mkdir(parents=True)
      for src in sorted((dataset_dir / split / name).glob("*.png"))[:count]:
        shutil.copy(src, root / split / name / src.name)
  return root


def randomize_keras_weights(model, seed=0):
  """Gives every weight of a Keras model random, non-trivial values (BN statistics included)."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    values = []
    for w in layer.weights:
      shape, name = tuple(w.shape), w.name
      if "moving_variance" in name:
        values.append(rng.uniform(0.5, 1.5, shape))
      elif "moving_mean" in name or "beta" in name or "bias" in name:
        values.append(rng.normal(0.0, 0.2, shape))
      elif "gamma" in name:
        values.append(rng.uniform(0.8, 1.2, shape))
      else:  # kernels: He-scaled so activations keep a sane scale through 94 layers
        fan_in = int(np.prod(shape[:-1]))
        values.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
    if values:
      layer.set_weights([v.astype(np.float32) for v in values])


@pytest.fixture(scope="session")
def keras_notop(tmp_path_factory):
  """(tf_keras InceptionV3 notop with random weights, path of its legacy .h5 weights file)."""
  import tf_keras

  model = tf_keras.applications.InceptionV3(weights=None, include_top=False)
  randomize_keras_weights(model)
  path = tmp_path_factory.mktemp("keras") / "inception_v3_notop.h5"
  model.save_weights(str(path))
  return model, path


def write_dicom(path, pixels, photometric="MONOCHROME2", bits_stored=None, signed=False,
                frames=None, **attributes):
  """A Secondary Capture Part 10 file, Explicit VR Little Endian, whose Pixel Data is the bytes of
  `pixels` ((frames,) rows, columns (, samples)); its dtype sets Bits Allocated."""
  from pydicom.dataset import Dataset, FileMetaDataset
  from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

  meta = FileMetaDataset()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Modality = "OT"
  shape = pixels.shape[1:] if frames else pixels.shape
  ds.Rows, ds.Columns = shape[:2]
  ds.SamplesPerPixel = shape[2] if len(shape) == 3 else 1
  if ds.SamplesPerPixel > 1:
    ds.PlanarConfiguration = 0
  if frames:
    ds.NumberOfFrames = frames
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated = pixels.dtype.itemsize * 8
  ds.BitsStored = bits_stored or ds.BitsAllocated
  ds.HighBit = ds.BitsStored - 1
  ds.PixelRepresentation = int(signed)
  for keyword, value in attributes.items():
    setattr(ds, keyword, value)
  ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
  ds.save_as(path, enforce_file_format=True)
  return path


def marker_dataset(root, markers: dict, size: int, per_class=(12, 4), seed: int = 0):
  """Noise films in TRAIN/ and VAL/ (`per_class` images each), one folder per class of `markers`:
  a class' (top, left, side) bright square, (top, left, side, grey) a square of that grey, or None
  for none, is all that tells them apart."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  for split, n in zip(("TRAIN", "VAL"), per_class):
    for cls, marker in markers.items():
      (root / split / cls).mkdir(parents=True)
      for k in range(n):
        image = rng.integers(40, 140, (size, size)).astype(np.uint8)
        if marker is not None:
          top, left, side, grey = (*marker, 255)[:4]
          image[top:top + side, left:left + side] = grey
        Image.fromarray(image).save(root / split / cls / f"{cls}{k}.png")
  return root


def train_smoke(data, workdir, *settings) -> None:
  """`radjax train` with configs/smoke.py on `data`, no compilation cache, plus `settings`."""
  from radjax.commands import cli

  repo = pathlib.Path(__file__).resolve().parents[1]
  assert cli.main(["train", "--config", str(repo / "configs" / "smoke.py"), "--workdir",
                   str(workdir), f"--config.data_dir={data}", "--config.compilation_cache=",
                   *settings]) == 0


def assert_intervals_close(got: dict, want: dict, rel: float = 1e-6) -> None:
  """{metric: (low, high)} dicts equal to `rel`, NaN equal to NaN (pytest >= 9.2 refuses an
  approx of a dict of sequences)."""
  assert set(got) == set(want), (sorted(got), sorted(want))
  for key, interval in want.items():
    np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(interval, float),
                               rtol=rel, equal_nan=True, err_msg=key)


# Two paths that compute the same scores agree to float32 rounding: probabilities near 0.5 lie
# 6e-8 apart, so a few units in the last place.
ROUNDING_FLOOR = 1e-6


def batch_spread(logits_at, inputs, sizes, scores=None) -> np.ndarray:
  """Per input (and class), how far its score moves when the same `inputs` are scored in batches
  of each of `sizes` (the largest minus the smallest). float32 convolutions round differently
  per batch shape, by an amount that depends on the CPU's kernels (AVX-512 or not, how XLA splits
  the work): a comparison between paths that batch differently is held to this spread, measured
  on the model and films under test, never to a tolerance guessed on one machine.
  `logits_at(inputs, batch_size)`: logits of up to `batch_size` inputs scored in one batch of that
  size; `scores`: logits -> what is compared (default: sigmoid, a binary run's probability)."""
  from radjax.metrics.probabilities import sigmoid

  scores = scores or sigmoid
  got = np.stack([scores(np.concatenate([logits_at(inputs[k:k + size], size)
                                         for k in range(0, len(inputs), size)]))
                  for size in sizes])
  return got.max(axis=0) - got.min(axis=0)


def assert_within_spread(got, want, spread) -> None:
  """|got - want| within twice the measured batch-shape `spread` (per element) plus
  ROUNDING_FLOOR: each path may sit at either end of the spread, and twice it leaves room for
  batch positions and shapes the measurement did not try."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  bound = 2 * np.asarray(spread, np.float64) + ROUNDING_FLOOR
  excess = np.abs(got - want) - bound
  assert np.all(excess <= 0), (f"differences {np.abs(got - want).max():.3g} exceed twice the "
                               f"model's own batch-shape spread (+{ROUNDING_FLOOR:g}) by up to "
                               f"{excess.max():.3g}")


def run_logits_at(workdir, which: str = "latest"):
  """`batch_spread`'s `logits_at` for a trained run, as predict and stress score: padded batches
  through the run's compiled inference step."""
  from radjax.data import preprocess
  from radjax.training import run as run_lib

  trained = run_lib.load(workdir, which)

  def logits_at(inputs, size):
    batch = preprocess.pad_batch({"image": np.asarray(inputs, np.float32),
                                  "label": np.zeros(len(inputs), np.int32)}, size)
    return trained.steps.logits_of(trained.variables, [batch])[0]

  return logits_at, trained


def export_logits_at(loaded):
  """`batch_spread`'s `logits_at` for an export (`radjax.exported.load`): `inputs` padded with
  black films to a batch of `size` (the program takes any batch size, so the shape is what is
  padded to)."""
  def logits_at(inputs, size):
    padded = np.concatenate([inputs, np.zeros((size - len(inputs), *inputs.shape[1:]),
                                              inputs.dtype)])
    return loaded.logits(padded)[:len(inputs)]
  return logits_at


def run_and_export_spread(workdir, model, paths, sizes, scores=None) -> np.ndarray:
  """The run's and the export's own batch-shape spreads (`batch_spread`) on the films at `paths`,
  added: what a run's and an export's answers, batched differently, may differ by."""
  from radjax import exported
  from radjax.data import images

  logits_at, _ = run_logits_at(workdir)
  loaded = exported.load(model)
  inputs = np.stack([loaded.preprocess(images.read_image(p), pixel_range=(0, 255))
                     for p in paths])
  return (batch_spread(logits_at, inputs, sizes, scores)
          + batch_spread(export_logits_at(loaded), inputs, sizes, scores))
