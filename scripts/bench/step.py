"""radjax' train step, timed: hello_world's model from random weights at a batch, dtype and
`--image-size`, compiled for one device, fed one seeded batch again and again. Compilation is
timed apart (a first compile's: the steps cache is cleared), `--warmup` steps run untimed, the
clock stops only once the device is done, and the figure is the median of `--repeats` runs of
`--steps` steps, so that a step's time is the device's work and not the host's or the compiler's.
Every part that times a step (the peers too) times it this way (`timed_repeats`)."""

from __future__ import annotations

import statistics
import time

from bench import REPO
from bench.records import emit


def points(text: str) -> list[tuple[int, str]]:
  """"5:float32,256:bfloat16" -> [(5, "float32"), (256, "bfloat16")]."""
  return [(int(b), d) for b, d in (item.split(":") for item in text.split(",") if item)]


def timed_repeats(run_once, repeats: int) -> list[float]:
  """Seconds of each timed repeat (run_once must block until the work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_once()
    times.append(time.perf_counter() - start)
  return times


STEP_INPUTS = ("float", "uint8")  # variant "input=uint8": the batch the arrays loop feeds


def variant_overrides(variant: str) -> tuple[list[str], str]:
  """"pool_impl=window,bn_grad=autodiff" -> (config overrides, step input). "" = the config's own
  settings and a float batch (host augmentation's model input); "input=uint8" = cached uint8
  pixels with per-example transforms, augmented and scaled inside the step (augment_on=device)."""
  overrides, step_input = [], "float"
  for setting in filter(None, (s.strip() for s in variant.split(","))):
    if setting.startswith("input="):
      step_input = setting.split("=", 1)[1]
      if step_input not in STEP_INPUTS:
        raise ValueError(f"variant {variant!r}: input must be one of {', '.join(STEP_INPUTS)}")
    else:
      overrides.append(f"--config.{setting}")
  return overrides, step_input


def step_config(batch: int, dtype: str, args, overrides=()):
  """hello_world from random weights at this batch, dtype and --image-size, on one device."""
  from radjax.training import config as config_lib

  return config_lib.load_config(REPO / "configs" / "hello_world.py", [
      "--config.weights=none", f"--config.dtype={dtype}", f"--config.batch_size={batch}",
      f"--config.image_size={args.image_size}", *overrides], device_count=1)


def random_batch(batch: int, args) -> dict:
  """The seeded float batch every step measurement feeds: images in [-1, 1], binary labels."""
  import numpy as np

  rng = np.random.default_rng(0)
  return {"image": rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(
              np.float32),
          "label": rng.integers(0, 2, batch).astype(np.int32)}


def compiled_radjax_step(device_kind: str, batch: int, dtype: str, args, variant: str = ""):
  """hello_world's train step on one device of `device_kind`, compiled, with a random batch;
  also the implementations it uses (conv_impl, pool_impl, bn_grad with "auto" resolved)."""
  import jax
  import numpy as np

  from radjax.training import run as run_lib

  devices = jax.devices(device_kind)[:1]
  overrides, step_input = variant_overrides(variant)
  config = step_config(batch, dtype, args, overrides)
  with jax.default_device(devices[0]):
    run_lib.clear_steps_cache()  # compile_s is a first compile's, as in a new process
    run = run_lib.build(config, devices)
  implementations = run_lib.implementations(config, devices[0].platform)
  steps, state = run.steps, run.state
  if step_input == "uint8":
    from radjax.data import augment

    rng = np.random.default_rng(0)
    size = (batch, args.image_size, args.image_size, 3)
    host = {"image": rng.integers(0, 256, size, dtype=np.uint8),
            "transform": augment.epoch_transforms(0, 1, batch, config.augment, args.image_size,
                                                  args.image_size)}
    host["label"] = rng.integers(0, 2, batch).astype(np.int32)
  else:
    host = random_batch(batch, args)
  data = steps.shard(host)
  key = jax.random.key(0)

  start = time.perf_counter()
  compiled = steps.compile_train(state, data, key)
  compile_s = time.perf_counter() - start
  return devices, compiled, state, data, key, compile_s, implementations


def bench_radjax_step(device_kind: str, batch: int, dtype: str, args, variant: str = ""):
  """Times the compiled step (median of --repeats) and emits its record; returns the step."""
  import jax

  devices, compiled, state, data, key, compile_s, implementations = compiled_radjax_step(
      device_kind, batch, dtype, args, variant)
  holder = {"state": state}

  def run(n):
    def once():
      s, metrics = holder["state"], None
      for _ in range(n):
        s, metrics = compiled(s, data, key)
      jax.block_until_ready((s, metrics))
      holder["state"] = s
    return once

  run(args.warmup)()
  times = timed_repeats(run(args.steps), args.repeats)
  ms = statistics.median(times) / args.steps * 1e3
  stats = devices[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  if peak is None:  # CPU: the process' peak resident memory (includes everything in it)
    import resource
    peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"
  else:
    peak_kind = "device"
  emit(part="train_step", impl="radjax", device=device_kind, device_name=devices[0].device_kind,
       variant=variant, implementations=implementations,
       batch=batch, dtype=dtype, image_size=args.image_size, ms_per_step=ms,
       images_per_s=batch * 1e3 / ms, compile_s=compile_s, peak_memory_gb=peak / 2**30,
       peak_memory_kind=peak_kind, repeats=[t / args.steps * 1e3 for t in times])
  return compiled
