"""hello_world epochs end to end, through `train.train_and_evaluate` as `radjax train` runs them:
what a user waits for, split into training, precise BN and validation, the first epoch with its
compiling. From class folders (tf.data) or, with `--arrays`, a pre-decoded .npz with device
augmentation (no TensorFlow needed). Another backend's epochs (the CPU of a GPU machine, for
`--device both`) run in a child process that sees only that backend.
"""

from __future__ import annotations

import tempfile
import time

from bench import REPO, children
from bench.pipeline import tensorflow_available
from bench.records import emit


def bench_end_to_end(args) -> None:
  """hello_world epochs through `train.train_and_evaluate`, from class folders (tf.data) or, with
  `--arrays`, from a pre-decoded .npz with device augmentation (no TensorFlow needed)."""
  augment_on = args.augment_on or ("device" if args.arrays else "host")
  if not args.arrays and not tensorflow_available("end_to_end"):
    return  # skipped: pass --arrays FILE.npz (written by `radjax export-arrays`)
  from radjax.training import config as config_lib, loop as train, run as run_lib

  data_dir = args.arrays or args.data_dir
  config = config_lib.load_config(REPO / "configs" / "hello_world.py", [
      "--config.weights=none", f"--config.data_dir={data_dir}",
      f"--config.num_epochs={args.e2e_epochs}", f"--config.image_size={args.image_size}",
      f"--config.augment_on={augment_on}", "--config.compilation_cache="])
  run_lib.clear_steps_cache()  # the first epoch compiles, as a user's first run does
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    history = train.train_and_evaluate(config, workdir)
    total = time.perf_counter() - start
  import jax

  emit(part="end_to_end", impl="radjax", config="hello_world", epochs=args.e2e_epochs,
       device=jax.default_backend(), device_name=jax.devices()[0].device_kind,
       batch=config.batch_size,
       steps_per_epoch=round(history[0]["images_per_s"] * history[0]["train_seconds"]
                             / config.batch_size), total_s=total, epoch_s=[h["epoch_seconds"] for h in history],
       train_s=[h["train_seconds"] for h in history],
       precise_bn_s=[h["precise_bn_seconds"] for h in history],
       val_s=[h["val_seconds"] for h in history],
       train_images_per_s=[h["images_per_s"] for h in history], image_size=args.image_size,
       augment_on=augment_on, data="arrays" if args.arrays else "folders")


# What JAX_PLATFORMS selects each device kind's backend by.
JAX_PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}


def bench_end_to_end_elsewhere(device_kind: str, args) -> None:
  """The end-to-end epochs on a backend that is not this process' default (the CPU of a GPU
  machine), in a child process that sees only that backend: the loop trains on every device of
  its process' backend, so this is the run a user of that backend gets."""
  flags = ["--device", device_kind, "--parts", "e2e", "--peers", "none",
           "--e2e-epochs", str(args.e2e_epochs), "--image-size", str(args.image_size),
           "--data-dir", args.data_dir]
  flags += ["--arrays", args.arrays] if args.arrays else []
  flags += ["--augment-on", args.augment_on] if args.augment_on else []
  child, records = children.run(flags, env={"JAX_PLATFORMS": JAX_PLATFORMS[device_kind]})
  measured = [r for r in records if r["part"] == "end_to_end" and "skipped" not in r]
  if child.returncode != 0 or not measured:
    why = next((r["skipped"] for r in records if "skipped" in r), child.stderr.strip()[-300:])
    raise RuntimeError(f"the {device_kind} child (exit {child.returncode}): {why}")
  for record in measured:
    emit(**record)
