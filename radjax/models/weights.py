"""Keras InceptionV3 weights -> Flax variables, strictly, without TensorFlow.

Keras' legacy HDF5 weights files list their layers in `model.layers` order and Keras loads them by
position, not by name (layer names changed between Keras versions: `conv2d_1` in the official 2017
file, `conv2d` in files saved today). radjax does the same: `keras_layer_order()` reproduces Keras'
ordering of a functional model (longest distance to the output first, ties broken by the depth-first
order in which Keras discovers layers from the output) from the architecture in
`radjax.models.inception_v3`, and every tensor of the file must land on exactly one Flax leaf of the
right shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radjax.cache import cache_dir
from radjax.models.inception_v3 import BLOCKS, Conv, InceptionV3, Pool, Split, STEM, unit_name
from radjax.errors import UserError

# From keras/applications/inception_v3.py (WEIGHTS_PATH_NO_TOP and its `file_hash`, an MD5).
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                      "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"
DOWNLOAD_TIMEOUT_S = 30


class WeightsError(UserError):
  """A weights file that is not what radjax needs; the message says what and where."""


# ----------------------------------------------------------------------------------------------
# Keras layer order
# ----------------------------------------------------------------------------------------------

def keras_layer_order() -> list[tuple[str, str]]:
  """(unit name, "conv" | "bn") for every weighted Keras layer, in the order of `model.layers`."""
  order = []
  for i, op in enumerate(STEM, start=1):
    if isinstance(op, Conv):
      order += [(unit_name("stem", i), "conv"), (unit_name("stem", i), "bn")]
  for block, branches in BLOCKS:
    # Within a block every layer is deeper than everything after the block's concatenation, so
    # blocks stay in sequence; inside a block Keras sorts by distance to the concatenation
    # (Conv -> BN -> ReLU spans 3 layers, a pool 1, a split's own concatenation 1) and breaks ties
    # by branch order, then by the split's order.
    entries = []
    for b, (branch, ops) in enumerate(branches):
      scope, distance = f"{block}_{branch}", 1
      for i in range(len(ops), 0, -1):
        op = ops[i - 1]
        if isinstance(op, Pool):
          distance += 1
        elif isinstance(op, Conv):
          entries += [(distance + 2, b, 0, unit_name(scope, i), "conv"),
                      (distance + 1, b, 0, unit_name(scope, i), "bn")]
          distance += 3
        elif isinstance(op, Split):
          for s, sub in enumerate("ab"):
            entries += [(distance + 3, b, s, unit_name(scope, i, sub), "conv"),
                        (distance + 2, b, s, unit_name(scope, i, sub), "bn")]
          distance += 4
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    order += [(name, kind) for *_, name, kind in entries]
  return order


def backbone_shapes() -> dict[str, Any]:
  """Shapes of the InceptionV3 variables (no computation: `jax.eval_shape`)."""
  return jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))


# ----------------------------------------------------------------------------------------------
# HDF5 reading
# ----------------------------------------------------------------------------------------------

def _text(value) -> str:
  return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_weighted_layers(path: pathlib.Path) -> list[tuple[str, list[np.ndarray]]]:
  import h5py  # imported here: only conversion needs it

  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise WeightsError(f"{path}: not an HDF5 file ({e}). Expected Keras' "
                       "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 "
                       "or a file written by `model.save_weights('x.h5')`.") from None
  with f:
    group = f["model_weights"] if "model_weights" in f else f  # full-model files nest the weights
    if "layer_names" not in group.attrs:
      raise WeightsError(f"{path}: HDF5 file without Keras' 'layer_names' attribute; it is not a "
                         "Keras legacy weights file (a Keras 3 '.weights.h5' file is not supported).")
    layers = []
    for layer in map(_text, group.attrs["layer_names"]):
      weight_names = [_text(n) for n in group[layer].attrs.get("weight_names", [])]
      if weight_names:
        layers.append((layer, [np.asarray(group[layer][n]) for n in weight_names]))
  return layers


def _describe(arrays: list[np.ndarray]) -> str:
  return " + ".join("x".join(map(str, a.shape)) for a in arrays)


def keras_h5_to_variables(path) -> dict[str, Any]:
  """Converts a Keras InceptionV3 notop `.h5` file into `{"params": ..., "batch_stats": ...}`.

  Raises `WeightsError` naming the layer and both shapes on any mismatch.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise WeightsError(f"{path}: no such weights file")
  layers = _read_weighted_layers(path)
  shapes = backbone_shapes()
  order = keras_layer_order()
  params: dict[str, dict] = {}
  stats: dict[str, dict] = {}
  for k, (unit, kind) in enumerate(order):
    if k >= len(layers):
      missing = ", ".join(f"{u}/{t}" for u, t in order[k:k + 3])
      raise WeightsError(f"{path}: the file ends after {len(layers)} weighted layers, InceptionV3 "
                         f"has {len(order)}; nothing for radjax's {missing}...")
    layer, arrays = layers[k]
    if kind == "conv":
      want = [shapes["params"][unit]["conv"]["kernel"].shape]
    else:  # BatchNormalization(scale=False): beta, moving_mean, moving_variance
      want = [shapes["params"][unit]["bn"]["bias"].shape, shapes["batch_stats"][unit]["bn"]["mean"].shape,
              shapes["batch_stats"][unit]["bn"]["var"].shape]
    got = [a.shape for a in arrays]
    if got != want:
      raise WeightsError(
          f"{path}: layer #{k + 1} '{layer}' holds {_describe(arrays)}, but radjax's {unit}/{kind} "
          f"needs {' + '.join('x'.join(map(str, s)) for s in want)}. Is this InceptionV3 without its "
          "top (include_top=False)?")
    if kind == "conv":
      params.setdefault(unit, {})["conv"] = {"kernel": arrays[0].astype(np.float32)}
    else:
      params.setdefault(unit, {})["bn"] = {"bias": arrays[0].astype(np.float32)}
      stats[unit] = {"bn": {"mean": arrays[1].astype(np.float32), "var": arrays[2].astype(np.float32)}}
  if len(layers) > len(order):
    extra = layers[len(order):]
    layer, arrays = extra[0]
    top = " It is the ImageNet classification top: use the notop file." if layer == "predictions" else ""
    raise WeightsError(f"{path}: {len(extra)} weighted layer(s) left over after InceptionV3's "
                       f"{len(order)}: '{layer}' ({_describe(arrays)}).{top}")
  variables = {"params": params, "batch_stats": stats}
  filled = jax.tree.structure(variables)
  expected = jax.tree.structure(jax.tree.map(lambda s: 0, shapes))
  if filled != expected:  # cannot happen when shapes matched one for one; kept as a guard
    raise WeightsError(f"{path}: converted tree does not match InceptionV3's variables")
  return variables


# ----------------------------------------------------------------------------------------------
# Saving, loading, ImageNet download
# ----------------------------------------------------------------------------------------------

def save_variables(variables, directory) -> pathlib.Path:
  """Writes variables as an Orbax checkpoint at `directory` (replacing what is there)."""
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).absolute()
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, variables, force=True)
    checkpointer.wait_until_finished()
  return directory


def load_variables(directory) -> dict[str, Any]:
  """Reads variables written by `save_variables` (e.g. by `radjax convert-weights`)."""
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).absolute()
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32), backbone_shapes())
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(directory, target)
  return jax.tree.map(np.asarray, restored)


def _md5(path: pathlib.Path) -> str:
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def download_imagenet_h5(directory: pathlib.Path | None = None) -> pathlib.Path:
  """Downloads Keras' official notop file into the cache and checks its published MD5."""
  directory = directory or cache_dir()
  target = directory / pathlib.Path(IMAGENET_NOTOP_URL).name
  if target.is_file() and _md5(target) == IMAGENET_NOTOP_MD5:
    return target
  directory.mkdir(parents=True, exist_ok=True)
  print(f"Downloading ImageNet weights from {IMAGENET_NOTOP_URL} ...", flush=True)
  try:
    with urllib.request.urlopen(IMAGENET_NOTOP_URL, timeout=DOWNLOAD_TIMEOUT_S) as response, \
        tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
      shutil.copyfileobj(response, tmp)
  except (urllib.error.URLError, OSError) as e:
    raise WeightsError(
        f"Could not download the ImageNet weights ({e}). Without network access pass a local copy, "
        f"weights=/path/to/{target.name}, or train from scratch with weights=none.") from None
  if _md5(pathlib.Path(tmp.name)) != IMAGENET_NOTOP_MD5:
    os.unlink(tmp.name)
    raise WeightsError(f"Downloaded {IMAGENET_NOTOP_URL} but its MD5 is not Keras' published "
                       f"{IMAGENET_NOTOP_MD5}; the file was discarded.")
  os.replace(tmp.name, target)
  return target


def backbone_variables(weights: str) -> tuple[dict[str, Any] | None, str]:
  """Resolves a `weights` setting to backbone variables and a description of their source.

  `"imagenet"`: Keras' official file, downloaded and converted once into the cache.
  A path: a Keras `.h5` file or a directory written by `radjax convert-weights`.
  `"none"`: no pretrained weights (returns None).
  """
  if weights.lower() == "none":
    return None, "none (random initialisation)"
  if weights.lower() == "imagenet":
    converted = cache_dir() / "inception_v3_imagenet_notop"
    if not converted.is_dir():
      save_variables(keras_h5_to_variables(download_imagenet_h5()), converted)
    return load_variables(converted), f"ImageNet (Keras notop file, converted in {converted})"
  path = pathlib.Path(weights).expanduser()
  if path.is_dir():
    return load_variables(path), str(path)
  if path.is_file():
    return keras_h5_to_variables(path), str(path)
  raise WeightsError(f"weights={weights!r}: expected 'imagenet', 'none', a Keras .h5 file or a "
                     "directory written by `radjax convert-weights`; no such file or directory.")


@dataclasses.dataclass
class LoadReport:
  source: str
  loaded_leaves: int
  loaded_values: int
  fresh: list[str]

  def __str__(self):
    if not self.loaded_leaves:
      return f"Weights: {self.source}; every layer freshly initialised."
    return (f"Weights: {self.loaded_leaves} backbone tensors ({self.loaded_values:,} values) from "
            f"{self.source}; freshly initialised: {', '.join(self.fresh)}.")


def load_into_classifier(variables: dict[str, Any], weights: str) -> tuple[dict[str, Any], LoadReport]:
  """Fills the classifier's backbone from `weights`; the head keeps its fresh initialisation.

  Strict: the pretrained tree must match the backbone's structure, shapes included.
  """
  pretrained, source = backbone_variables(weights)
  fresh = sorted(k for k in variables["params"] if k != "backbone")
  if pretrained is None:
    return variables, LoadReport(source, 0, 0, fresh)
  new = {collection: dict(tree) for collection, tree in variables.items()}
  for collection in ("params", "batch_stats"):
    current = variables[collection]["backbone"]
    loaded = pretrained[collection]
    if jax.tree.structure(current) != jax.tree.structure(loaded):
      raise WeightsError(f"{source}: {collection} tree does not match the InceptionV3 backbone")
    mismatched = [
        (jax.tree_util.keystr(p), a.shape, b.shape)
        for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(current), jax.tree.leaves(loaded))
        if a.shape != b.shape]
    if mismatched:
      raise WeightsError(f"{source}: shape mismatch at {mismatched[0][0]}: model {mismatched[0][1]}, "
                         f"weights {mismatched[0][2]}")
    new[collection]["backbone"] = jax.tree.map(lambda a, b: jnp.asarray(b, a.dtype), current, loaded)
  leaves = jax.tree.leaves(pretrained)
  return new, LoadReport(source, len(leaves), sum(int(np.size(x)) for x in leaves), fresh)
