"""Loading ml_collections config files (configs/*.py) with `--config.a.b=value` overrides.

Config files are loaded by path, so they work from an installed `radjax` console script too, where
the repo's top-level `configs` package is not on sys.path; variants do `from configs import
default`, so the folder holding `configs/` is made importable while a file loads.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys

import ml_collections

from radjax.errors import UserError

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.py"


def load_config_file(path) -> ml_collections.ConfigDict:
  """Runs `path` as a module and returns its `get_config()` (unlocked, no overrides)."""
  path = pathlib.Path(path)
  if not path.is_file():
    candidate = CONFIG_DIR / path.name
    if not candidate.is_file():
      raise UserError(f"{path}: no such config file (the shipped ones are in {CONFIG_DIR})")
    path = candidate
  # Appended, so it never shadows an installed package.
  root = str(path.resolve().parents[1])
  if root not in sys.path:
    sys.path.append(root)
  spec = importlib.util.spec_from_file_location(f"radjax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, "get_config", None)):
    raise UserError(f"{path}: a config file must define get_config()")
  return module.get_config()


def load_config(path, overrides=()) -> ml_collections.ConfigDict:
  """`get_config()` of the file at `path` with overrides applied, locked (a typo fails).

  `overrides` are command-line words: `--config.num_epochs=5`, or `--config.num_epochs 5`.
  """
  config = load_config_file(path)
  apply_overrides(config, overrides)
  config.lock()
  return config


def load_default_config() -> ml_collections.ConfigDict:
  """The default settings: configs/default.py next to the radjax package (a source checkout)."""
  if not DEFAULT_CONFIG.is_file():
    raise UserError(f"{DEFAULT_CONFIG}: not found; run radjax from its source checkout")
  return load_config_file(DEFAULT_CONFIG)


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
  """A locked config from the dict stored in a checkpoint.

  Stored values go over today's defaults, so a checkpoint written before a setting existed still
  loads (the new setting takes its default, which reproduces the old behaviour).
  """
  config = load_default_config() if DEFAULT_CONFIG.is_file() else ml_collections.ConfigDict()

  def merge(node, stored):
    for key, value in stored.items():
      if isinstance(value, dict) and key in node:
        merge(node[key], value)
      else:
        node[key] = value

  merge(config, values)
  config.lock()
  return config


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
