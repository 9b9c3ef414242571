"""Loading ml_collections configs with `--config.a.b=value` overrides, and checking every setting.

The configs live in the repository's `configs/` folder, which is installed as the `radjax.configs`
package, so a config is given as a path (`configs/hello_world.py`, or a file of your own that does
`from radjax.configs import default`) or as the name of a shipped one (`hello_world`). Every
setting is checked once, at load (`validate`), before any image is decoded.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import pathlib

import ml_collections

from radjax.data import sampling
from radjax.errors import UserError

CHOICES = {
    "resize": ("squash", "pad"),
    "resize_method": ("bilinear", "nearest", "bicubic", "area"),
    "value_range": ("inception", "unit"),
    "dicom_voi": ("auto", "window", "voi_lut", "none"),
    "crop_borders": ("off", "auto"),
    "dtype": ("float32", "bfloat16"),
    "task": ("auto", "binary", "multiclass", "multilabel"),
    "conv_impl": ("auto", "xla", "gemm"),
    "pool_impl": ("auto", "xla", "window"),
    "bn_grad": ("auto", "closed_form", "autodiff"),
    "bn_stats": ("auto", "two_pass", "one_pass"),
    # Keras' "constant" and "wrap" fill differ from TensorFlow's at the border: only these two match.
    "augment.fill_mode": ("nearest", "reflect"),
    "augment.interpolation": ("bilinear", "nearest"),
    "augment_on": ("host", "device"),
    "sampling": ("shuffle", "balanced"),
}
MIN_IMAGE_SIZE = 75  # InceptionV3's smallest input
AT_LEAST_ONE = ("batch_size", "eval_batch_size", "num_epochs", "hidden_units", "keep_checkpoints",
                "shuffle_buffer")
NON_NEGATIVE_SETTINGS = ("precise_bn_cache_mb", "precise_bn_images_per_call",  # 0: auto
                         "cache_mb", "seed")  # NumPy's and TensorFlow's seeds cannot be negative
NON_NEGATIVE = ("augment.rotation_range", "augment.width_shift_range",
                "augment.height_shift_range", "augment.shear_range", "augment.zoom_range")

ACQUISITION_PROBABILITIES = ("augment.framing.probability", "augment.overlays.probability",
                             "augment.intensity.probability")
MAX_BAND_FRACTION = 0.45  # bands on opposite sides leave at least a tenth of the film
MAX_BLUR_SIGMA = 8.0  # pixels: the kernel is 6 sigma wide, summed per output pixel

# On resume: settings that change what the weights mean or which data they see must match the
# checkpoint's (the data directory and its classes are compared too, see radjax.training.loop).
MUST_MATCH_ON_RESUME = ("image_size", "resize", "resize_method", "value_range", "dicom_voi",
                        "crop_borders", "hidden_units")  # and the resolved task: radjax.training.loop compares it
# Everything else may change between stages (num_epochs, fine_tune, learning rate, batch size,
# dtype, augmentation, ...): the change is reported and recorded, and exact resume (the run an
# uninterrupted one would have been) holds only when nothing changed. These differ without
# changing the run at all:
IRRELEVANT_ON_RESUME = ("num_epochs", "compilation_cache", "keep_checkpoints", "distributed",
                        "weights", "data_dir", "precise_bn_cache_mb",
                        "precise_bn_images_per_call")  # the same statistics, other passes


def shipped_config(name: str) -> pathlib.Path:
  import radjax.configs

  return pathlib.Path(radjax.configs.__file__).parent / f"{name}.py"


def load_config_file(path) -> ml_collections.ConfigDict:
  """Runs the config file at `path` (or the shipped config named `path`) and returns its
  `get_config()`, unlocked and unchecked."""
  path = pathlib.Path(path)
  if not path.is_file():
    shipped = shipped_config(path.stem)
    if path.parent != pathlib.Path(".") or not shipped.is_file():
      raise UserError(f"{path}: no such config file (shipped: "
                      f"{', '.join(sorted(p.stem for p in shipped.parent.glob('[!_]*.py')))})")
    path = shipped
  spec = importlib.util.spec_from_file_location(f"radjax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    raise UserError(f"{path}: the config file fails to run ({type(e).__name__}: {e})") from None
  if not callable(getattr(module, "get_config", None)):
    raise UserError(f"{path}: a config file must define get_config()")
  return module.get_config()


def load_config(path, overrides=(), device_count: int | None = None) -> ml_collections.ConfigDict:
  """`get_config()` of the file at `path` with overrides applied, checked and locked.

  `overrides` are command-line words: `--config.num_epochs=5`, or `--config.num_epochs 5`.
  `device_count` (default: JAX's) must divide the batch sizes.
  """
  config = load_config_file(path)
  apply_overrides(config, overrides)
  if device_count is None:
    import jax

    if config.get("distributed"):
      initialize_distributed()  # before anything starts JAX' backend (device_count does)
    device_count = jax.device_count()  # every process's devices together
  validate(config, device_count)
  config.lock()
  return config


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` once per process (it finds SLURM, Open MPI, Kubernetes...)."""
  import jax

  if not jax.distributed.is_initialized():
    jax.distributed.initialize()


def default_config() -> ml_collections.ConfigDict:
  from radjax.configs import default

  return default.get_config()


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
  """A locked config from the dict stored in a checkpoint.

  Stored values go over today's defaults, so a checkpoint written before a setting existed still
  loads (the new setting takes its default, which reproduces the old behaviour).
  """
  config = default_config()

  def merge(node, stored):
    for key, value in stored.items():
      if isinstance(value, dict) and key in node:
        merge(node[key], value)
      else:
        node[key] = value

  merge(config, values)
  config.lock()
  return config


def _get(config, dotted: str):
  node = config
  for name in dotted.split("."):
    node = node[name]
  return node


def validate(config, device_count: int = 1) -> None:
  """Raises a UserError naming the first bad setting and what it accepts."""
  from radjax.models.stages import frozen_stages

  def bad(name, why):
    raise UserError(f"--config.{name}={_get(config, name)}: {why}")

  for name, choices in CHOICES.items():
    if _get(config, name) not in choices:
      bad(name, f"expected one of {', '.join(choices)}")
  for name in AT_LEAST_ONE:
    if _get(config, name) < 1:
      bad(name, "must be at least 1")
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % device_count:
      bad(name, f"must be divisible by the number of devices ({device_count})")
  if config.image_size < MIN_IMAGE_SIZE:
    bad("image_size", f"InceptionV3 needs at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels")
  for name in NON_NEGATIVE + NON_NEGATIVE_SETTINGS:
    if _get(config, name) < 0:
      bad(name, "cannot be negative")
  if not 0 <= config.dropout_rate < 1:
    bad("dropout_rate", "expected 0 <= rate < 1")
  if not 0 <= config.bn_momentum <= 1:
    bad("bn_momentum", "expected 0 <= momentum <= 1")
  if not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
    bad("learning_rate", "must be a positive number")
  for name in ("b1", "b2"):
    if not 0 <= config[name] < 1:
      bad(name, "expected 0 <= beta < 1")
  if not config.eps > 0:
    bad("eps", "must be positive")
  frozen_stages(config.fine_tune)  # raises for an unknown fine_tune
  sampling.explicit_class_weights(config.class_weight)  # raises for a malformed one
  from radjax.training import losses

  losses.resolve(config.loss)  # raises for an unknown name or a function that cannot be imported
  if not 0 <= config.label_smoothing < 1:
    bad("label_smoothing", "expected 0 <= smoothing < 1")
  for name in ("focal_gamma", "mixup_alpha", "cutmix_alpha"):
    if not (config[name] >= 0 and math.isfinite(config[name])):
      bad(name, "must be a number >= 0")
  if config.mixup_alpha and config.cutmix_alpha:
    bad("cutmix_alpha", f"mixup (--config.mixup_alpha={config.mixup_alpha}) and cutmix both "
                        "on: use one of them")
  for name in ACQUISITION_PROBABILITIES:
    if not 0 <= _get(config, name) <= 1:
      bad(name, "expected a probability, 0 <= p <= 1")
  if not 0 <= config.augment.framing.max_fraction <= MAX_BAND_FRACTION:
    bad("augment.framing.max_fraction", f"expected 0 <= fraction <= {MAX_BAND_FRACTION} (a band "
                                        "on each side must leave some film)")
  if not (config.augment.intensity.gamma >= 1 and math.isfinite(config.augment.intensity.gamma)):
    bad("augment.intensity.gamma", "expected a number >= 1 (1: no gamma change)")
  for name in ("augment.intensity.contrast", "augment.intensity.brightness",
               "augment.intensity.noise"):
    if not 0 <= _get(config, name) <= 1:
      bad(name, "expected 0 <= value <= 1 (a share of the grey range)")
  if not 0 <= config.augment.intensity.blur <= MAX_BLUR_SIGMA:
    bad("augment.intensity.blur", f"expected 0 <= sigma <= {MAX_BLUR_SIGMA} pixels")
  if config.sampling == "balanced" and config.class_weight:
    bad("sampling", f"balanced sampling and --config.class_weight={config.class_weight} both "
                    "correct the class balance; use one of them")


def flatten(values: dict, prefix: str = "") -> dict:
  """{"augment": {"zoom_range": 0.2}} -> {"augment.zoom_range": 0.2}."""
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def resume_changes(stored: dict, config) -> tuple[dict, dict]:
  """(forbidden, allowed) changes {name: [checkpoint's value, new value]} between a checkpoint's
  config and the new one. A setting the checkpoint predates is compared with its default."""
  old = flatten(config_from_dict(stored).to_dict())
  new = flatten(config.to_dict())
  changed = {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}
  forbidden = {k: v for k, v in changed.items() if k in MUST_MATCH_ON_RESUME}
  allowed = {k: v for k, v in changed.items()
             if k not in MUST_MATCH_ON_RESUME and k not in IRRELEVANT_ON_RESUME}
  return forbidden, allowed


def describe_changes(changes: dict) -> str:
  """{name: [old, new]} as "name old -> new; ..." (for messages and logs)."""
  return "; ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())


def _parse(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true or false, got {text!r}")
  if isinstance(current, str):
    return text
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  return ast.literal_eval(text)


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
  words = list(overrides)
  while words:
    word = words.pop(0)
    if not word.startswith("--config."):
      raise UserError(f"unexpected argument {word!r}; settings are given as --config.NAME=VALUE")
    key, sep, text = word[len("--config."):].partition("=")
    if not sep:
      if not words:
        raise UserError(f"{word}: missing value")
      text = words.pop(0)
    *parents, leaf = key.split(".")
    node = config
    try:
      for name in parents:
        node = node[name]
      current = node[leaf]
    except (KeyError, AttributeError, TypeError):
      raise UserError(f"--config.{key}: no such setting (see configs/default.py)") from None
    try:
      node[leaf] = _parse(text, current)
    except (ValueError, TypeError, SyntaxError) as e:
      raise UserError(f"--config.{key}={text}: {e}") from None


