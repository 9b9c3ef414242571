"""Where radjax keeps what it downloads and converts: `$RADJAX_CACHE`, else ~/.cache/radjax."""

import os
import pathlib


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("RADJAX_CACHE", "~/.cache/radjax")).expanduser()


