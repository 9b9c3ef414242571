"""Load a model written by `radjax export` and predict with it, with only JAX and NumPy.

    import radjax.exported
    model = radjax.exported.load("model.radjax")
    result = model.predict([pixels])          # uint8 (H, W[, C]) grey levels
    result = model.predict([x], pixel_range=(0, 1))   # floats: their range is stated
    result["probabilities"], result["labels"]

An export is a folder:

    radjax.json       what a user needs to feed it: image size, resize, value range, DICOM VOI,
                      border cropping, class names, task, the stored operating point, the radjax
                      version, the checkpoint's epoch and the SHA-256 of the weights and program
    model.jaxexport   the inference function (weights, preprocessed batch) -> logits, serialized
                      by `jax.export` as StableHLO for CPU and CUDA, with a symbolic batch size
                      and BatchNorm in inference mode
    weights.npz       the parameters and BatchNorm statistics, one array per path

Importing this module imports neither Flax, Optax, Orbax nor TensorFlow (tested in a process where
they cannot be imported). `predict` preprocesses as `radjax predict` does (border cropping, then
`preprocess.model_input`); a run that resizes with Pillow's nearest neighbour (the paper's
`hello_world`) is preprocessed in NumPy, other resize methods use TensorFlow's antialiased resize
exactly as training did, and import it then.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import types

import numpy as np

from radjax.errors import UserError

FORMAT = "radjax-export-1"
METADATA, PROGRAM, WEIGHTS = "radjax.json", "model.jaxexport", "weights.npz"
PATH_SEPARATOR = "/"  # weights.npz keys: "params/backbone/conv2d/kernel"


def sha256(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  """{"a": {"b": x}} -> {"a/b": x}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}{PATH_SEPARATOR}"))
    else:
      flat[f"{prefix}{key}"] = np.asarray(value)
  return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split(PATH_SEPARATOR)
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


class Exported:
  """A loaded export: `metadata`, `predict(images)`, `logits(batch)`."""

  def __init__(self, path: pathlib.Path, metadata: dict, program, variables: dict):
    self.path, self.metadata, self._program, self._variables = path, metadata, program, variables
    # The preprocessing settings as `radjax.data.preprocess` reads them from a config.
    self.config = types.SimpleNamespace(**metadata["preprocessing"])
    self.class_names = list(metadata["class_names"])
    self.task = metadata["task"]

  def logits(self, batch: np.ndarray) -> np.ndarray:
    """Logits of a preprocessed (n, S, S, 3) float32 batch (any n)."""
    import jax

    batch = np.asarray(batch, np.float32)
    size = self.metadata["preprocessing"]["image_size"]
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
      raise UserError(f"expected a batch of shape (n, {size}, {size}, 3), got {batch.shape}")
    return np.asarray(jax.device_get(self._program.call(self._variables, batch)), np.float64)

  def preprocess(self, pixels: np.ndarray, high_bit: bool = False, pixel_range=None,
                 name: str = "image") -> np.ndarray:
    """A film (H, W[, C]) -> the network's (S, S, 3) input, as `radjax predict` makes it (border
    cropping when the run used it, resize, quantization, range). Integer arrays are grey levels
    0-255; float arrays (and other integer ranges) need `pixel_range=(low, high)`, the values of
    black and white (`images.pixels_of_array`: never guessed)."""
    from radjax.data import images, preprocess

    pixels = images.pixels_of_array(pixels, pixel_range, name)
    if pixels.ndim == 2:
      pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
      raise UserError(f"expected an image of shape (H, W), (H, W, 1) or (H, W, 3), got "
                      f"{pixels.shape}")
    if pixels.shape[-1] == 1:
      pixels = np.repeat(pixels, 3, axis=-1)
    return preprocess.film_input(pixels, self.config, high_bit)

  def predict(self, images, high_bit=False, batch_size: int = 16, pixel_range=None) -> dict:
    """Images (one array or a list; `high_bit`: one flag, or one per image) -> logits,
    probabilities and decisions at the stored operating point. Integer arrays are grey levels
    0-255; float arrays need `pixel_range`, e.g. (0, 1) or (0, 255) (see `preprocess`):

      binary      probabilities (n,) of the second class; labels by the stored threshold
      multiclass  probabilities (n, N); labels: the most probable class
      multilabel  probabilities (n, K); labels: "+"-joined labels above their thresholds, "none"
    """
    from radjax.metrics.probabilities import decided_labels, sigmoid, softmax

    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
      images = [images]
    flags = high_bit if isinstance(high_bit, (list, tuple)) else [high_bit] * len(images)
    inputs = np.stack([self.preprocess(image, flag, pixel_range, f"image {k}")
                       for k, (image, flag) in enumerate(zip(images, flags))])
    logits = np.concatenate([self.logits(inputs[k:k + batch_size])
                             for k in range(0, len(inputs), batch_size)])
    point = self.metadata["operating_point"]
    labels = decided_labels(logits, self.task, self.class_names, point.get("threshold_logit"))
    probabilities = softmax(logits) if self.task == "multiclass" else sigmoid(logits)
    return {"logits": logits, "probabilities": probabilities, "labels": labels}


def load(path) -> Exported:
  """The export in folder `path`; a missing, damaged or foreign one is a one-line UserError."""
  from jax import export

  path = pathlib.Path(path)
  if not path.is_dir():
    what = "not a folder (an export is the folder radjax export writes)" if path.exists() else \
        "no such export"
    raise UserError(f"{path}: {what}")
  try:
    metadata = json.loads((path / METADATA).read_text())
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: not a radjax export (its {METADATA} is unreadable: "
                    f"{type(e).__name__})") from None
  if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
    raise UserError(f"{path}: not a radjax export of format {FORMAT} "
                    f"(found {metadata.get('format') if isinstance(metadata, dict) else None!r})")
  # Each file is the one its radjax.json was written with: a damaged file, or one copied from
  # another export (whose weights would not fit this program, or fit and answer for another run),
  # is refused before anything runs. (Exports older than program_sha256 check their weights.)
  hashed = [(WEIGHTS, "weights_sha256")] + (
      [(PROGRAM, "program_sha256")] if "program_sha256" in metadata else [])
  for name, key in hashed:
    if not (path / name).is_file() or sha256(path / name) != metadata.get(key):
      raise UserError(f"{path / name}: missing, damaged or from another export (its SHA-256 "
                      f"differs from {METADATA}'s); export the run again")
  weights = path / WEIGHTS
  try:
    program = export.deserialize(bytearray((path / PROGRAM).read_bytes()))
    with np.load(weights, allow_pickle=False) as f:
      variables = unflatten({k: f[k] for k in f.files})
  except Exception as e:  # a damaged program: jax raises several types
    raise UserError(f"{path / PROGRAM}: cannot be read ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); export the run again") from None
  return Exported(path, metadata, program, variables)
