"""`radjax predict` of one PNG as a user runs it, in fresh processes: what a call costs end to end
(start-up, restoring the checkpoint, compiling or loading the compiled program, one image), cold
and with a warm compilation cache.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile
import time

from bench import REPO
from bench.records import emit


def bench_predict_cli(args) -> None:
  """`radjax predict` of one PNG as a user runs it, in fresh processes: cold (an empty compilation
  cache: the first call on a machine) and warm (every later call), on a checkpoint of the paper's
  model at --image-size (random weights: the time does not depend on them)."""
  import subprocess

  from radjax.data import datasets
  from radjax.training import checkpoints, config as config_lib, run as run_lib

  image = next(pathlib.Path(args.data_dir).glob("VAL/chest/*.png"))
  with tempfile.TemporaryDirectory() as tmp:
    cache, workdir = pathlib.Path(tmp) / "jax_cache", pathlib.Path(tmp) / "run"
    config = config_lib.load_config(REPO / "configs" / "hello_world.py", [
        "--config.weights=none", f"--config.image_size={args.image_size}",
        f"--config.data_dir={args.data_dir}", f"--config.compilation_cache={cache}"])
    class_names = datasets.open_pipeline(args.data_dir, config, splits=("val",)).class_names
    run = run_lib.build(config, class_names=class_names)
    manager = checkpoints.manager(workdir, 1)
    checkpoints.save(manager, 1, run.state, checkpoints.metadata(
        config, class_names, 1, {"val_auc": 0.5, "val_loss": 1.0}, str(args.data_dir), run.task))
    manager.close()
    seconds = []
    for _ in range(1 + max(args.repeats, 1)):  # cold, then warm repeats
      started = time.perf_counter()
      subprocess.run([sys.executable, "-m", "radjax", "predict", "--workdir", str(workdir),
                      str(image)], check=True, capture_output=True, text=True)
      seconds.append(time.perf_counter() - started)
  warm = sorted(seconds[1:])
  import jax

  emit(part="predict_cli", impl="radjax", device=jax.default_backend(), image_size=args.image_size,
       files=1, cold_s=seconds[0], warm_s=warm[len(warm) // 2], warm_repeats_s=seconds[1:])
