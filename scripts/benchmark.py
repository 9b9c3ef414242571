#!/usr/bin/env python
"""radjax speed benchmarks: train step, input pipeline, end-to-end epoch, and peers, in one run.

  python scripts/benchmark.py                       # CPU: batches 5,32; float32 + bfloat16; peers
  python scripts/benchmark.py --device gpu          # GPU: batches 5,64,256
  python scripts/benchmark.py --device both         # GPU and CPU: step and epoch, with ratios
  python scripts/benchmark.py --device gpu --step-at 5:float32,256:bfloat16 \
      --peers torch --torch-compile default,reduce-overhead   # PyTorch eager and compiled
  python scripts/benchmark.py --parts onednn --variants-at 5:float32,32:float32   # CPU, XLA oneDNN
  python scripts/benchmark.py --parts xla_flags --peers none   # CPU: what each XLA flag changes

Every figure is measured on this machine in this run; peers (Keras `train_on_batch` with the
paper's head and Adam, PyTorch torchvision inception_v3 eager and `torch.compile`d) run at the
same batch and image size when installed, and radjax is compared with the fastest PyTorch row.
Settings XLA reads once per process (XLA_FLAGS, another backend) are measured in child processes.
Step timings exclude compilation (reported separately), warm up first, block until the device
is done before the clock stops, and report the median of `--repeats` timed runs. Output:
one JSON object per line, then a markdown table. The train-step part needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "datasets" / "open_i_abd_vs_cxr"
DEFAULT_BATCHES = {"cpu": "5,32", "gpu": "5,64,256"}

RESULTS: list[dict] = []
_JSONL = None  # --jsonl: a file every record is appended to as well
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")  # before radjax adds its defaults


def emit(**record):
  # XLA_FLAGS change what XLA compiles (e.g. CUDA graphs): a radjax record names the ones it ran
  # under beyond radjax' own defaults (radjax.GPU_XLA_FLAGS, named in the "machine" record).
  if USER_XLA_FLAGS and record.get("impl") == "radjax":
    record.setdefault("xla_flags", USER_XLA_FLAGS)
  RESULTS.append(record)
  print(json.dumps(record), flush=True)
  if _JSONL is not None:
    _JSONL.write(json.dumps(record) + "\n")
    _JSONL.flush()


def commit() -> str:
  """The checkout's commit, "+changes" when tracked files differ from it; "" outside git."""
  import subprocess

  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

  head = git("rev-parse", "--short", "HEAD")
  return head + ("+changes" if head and git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict:
  cpu = platform.processor()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def timed_repeats(run_once, repeats: int) -> list[float]:
  """Seconds of each timed repeat (run_once must block until the work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_once()
    times.append(time.perf_counter() - start)
  return times


# ----------------------------------------------------------------------------------------------
# radjax train step
# ----------------------------------------------------------------------------------------------

STEP_INPUTS = ("float", "uint8")  # variant "input=uint8": the batch the arrays loop feeds


def _variant_overrides(variant: str) -> tuple[list[str], str]:
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


def _step_config(batch: int, dtype: str, args, overrides=()):
  """hello_world from random weights at this batch, dtype and --image-size, on one device."""
  from radjax.training import config as config_lib

  return config_lib.load_config(REPO / "configs" / "hello_world.py", [
      "--config.weights=none", f"--config.dtype={dtype}", f"--config.batch_size={batch}",
      f"--config.image_size={args.image_size}", *overrides], device_count=1)


def _random_batch(batch: int, args) -> dict:
  """The seeded float batch every step measurement feeds: images in [-1, 1], binary labels."""
  import numpy as np

  rng = np.random.default_rng(0)
  return {"image": rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(
              np.float32),
          "label": rng.integers(0, 2, batch).astype(np.int32)}


def _compiled_radjax_step(device_kind: str, batch: int, dtype: str, args, variant: str = ""):
  """hello_world's train step on one device of `device_kind`, compiled, with a random batch;
  also the implementations it uses (conv_impl, pool_impl, bn_grad with "auto" resolved)."""
  import jax
  import numpy as np

  from radjax.training import run as run_lib

  devices = jax.devices(device_kind)[:1]
  overrides, step_input = _variant_overrides(variant)
  config = _step_config(batch, dtype, args, overrides)
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
    host = _random_batch(batch, args)
  data = steps.shard(host)
  key = jax.random.key(0)

  start = time.perf_counter()
  compiled = steps.compile_train(state, data, key)
  compile_s = time.perf_counter() - start
  return devices, compiled, state, data, key, compile_s, implementations


def bench_radjax_step(device_kind: str, batch: int, dtype: str, args, variant: str = ""):
  """Times the compiled step (median of --repeats) and emits its record; returns the step."""
  import jax

  devices, compiled, state, data, key, compile_s, implementations = _compiled_radjax_step(
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


def _op_sources(hlo_text: str) -> dict[str, tuple[str, bool]]:
  """HLO instruction name -> (the JAX source path XLA kept for it, whether it multiplies matrices).

  A fusion's path is its root's, and a fusion that contains a dot or a convolution counts as a
  matrix product whatever its root. Ops XLA made itself (layout copies, the index arrays of
  max-pool gradients) have no path: they inherit their users', so they count with what needs them.
  """
  import re

  computations, current = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"(?:ENTRY )?%([\w.\-]+) .*\{$", line)
    if header:
      current = computations.setdefault(header.group(1), [])
    elif current is not None:
      current.append(line)
  has_matmul = {name: any(re.search(r"\b(dot|convolution)\(", l) for l in lines)
                for name, lines in computations.items()}
  sources, users = {}, {}
  for lines in computations.values():
    for line in lines:
      match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?\b([\w-]+)\((.*)", line)
      if not match or match.group(2) in ("while", "call", "conditional"):  # they contain others
        continue
      name, op, rest = match.groups()
      path = re.search(r'op_name="([^"]*)"', line)
      called = re.search(r"calls=%([\w.\-]+)", line)
      library = op == "custom-call" and re.search(r'custom_call_target="__(cudnn\$conv|cublas)', line)
      sources[name] = (path.group(1) if path else "",
                       op in ("dot", "convolution") or bool(library)
                       or bool(called and has_matmul.get(called.group(1))))
      for operand in re.findall(r"%([\w.\-]+)", rest.split("metadata=")[0]):
        users.setdefault(operand, []).append(name)
  for _ in range(8):  # paths flow back from users, a few hops (copy -> fusion -> ...)
    for name, (path, matmul) in sources.items():
      if not path:
        inherited = [sources[u][0] for u in users.get(name, []) if u in sources and sources[u][0]]
        if inherited:
          sources[name] = (inherited[0], matmul)
  return sources


def _profile_group(op_name: str, matmul: bool) -> str:
  """What an op computes: `transpose(jvp(...))` in its path marks the backward pass."""
  if not op_name:
    return "unattributed"
  if "transpose(" in op_name:
    direction = "backward"
  elif "jvp(" in op_name:
    direction = "forward"
  else:
    return "optimizer and metrics"
  last = op_name.rsplit("/", 1)[-1]
  if "/backbone/" not in op_name:
    what = "head and loss"
  elif matmul:
    what = "conv matmul"
  elif "/conv/" in op_name:
    what = "conv patches (slice, pad, concat)"
  elif "/bn/" in op_name:
    what = "batchnorm"
  elif last.startswith(("reduce_window", "select_and_scatter")) or "max_pool" in op_name:
    what = "pooling"
  elif last in ("concatenate", "split"):
    what = "block concat / split"
  elif last in ("max", "select_n", "gt"):
    what = "relu"
  else:
    what = "other backbone (avg-pool division, ...)"
  return f"{direction}: {what}"


def profile_radjax_step(device_kind: str, batch: int, dtype: str, args) -> None:
  """Where a train step's time goes: traced XLA ops grouped by what they compute.

  On CPU, op times are summed over the threads that ran them (two ops can run at once), so the
  shares are of op time; the step's wall time is given beside them. On a GPU, the ops are the
  kernels of its stream (one at a time), mapped to HLO ops by their "hlo_op" stat: op time well
  below the wall time means the GPU waited (kernel launches, the host). Tracing slows a GPU step
  several-fold (238 vs 61 ms on an H200): compare shares, not the traced wall time.
  """
  import collections

  import jax

  devices, compiled, state, data, key, _, implementations = _compiled_radjax_step(
      device_kind, batch, dtype, args)
  sources = _op_sources(compiled.as_text())
  for _ in range(args.warmup):
    state, metrics = compiled(state, data, key)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(args.steps):
        state, metrics = compiled(state, data, key)
      jax.block_until_ready(state)
    wall_ms = (time.perf_counter() - start) / args.steps * 1e3
    trace = jax.profiler.ProfileData.from_file(
        str(next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))))
  planes = list(trace.planes)
  gpu_planes = [pl for pl in planes if pl.name.startswith("/device:GPU")]
  if device_kind == "gpu" and gpu_planes:
    # The device's timelines: its streams' kernels (an "XLA Ops" line, where a version has one,
    # holds the same work again by HLO op; "XLA Modules" the whole program).
    lines = [line for pl in gpu_planes for line in pl.lines if line.name == "XLA Ops"] or [
        line for pl in gpu_planes for line in pl.lines if line.name != "XLA Modules"]
  else:
    lines = [line for pl in planes for line in pl.lines]
  on_device = device_kind == "gpu" and bool(gpu_planes)  # else host threads: not all are ops
  groups, ops, unmatched = collections.Counter(), collections.Counter(), collections.Counter()
  unmatched_stats, events = set(), 0
  for line in lines:
    for event in line.events:
      # A kernel or thunk names its HLO instruction in its "hlo_op" stat (GPU kernels are named
      # by the library: cuDNN, cuBLAS); CPU ops are also named by it.
      stats = dict(event.stats)
      name = stats.get("hlo_op", event.name)
      ms = event.duration_ns / 1e6 / args.steps
      if name not in sources:
        if on_device:  # a GPU kernel no HLO op claims: kept by name, so no time goes missing
          unmatched[event.name[:80]] += ms
          unmatched_stats.update(stats)
        continue
      groups[_profile_group(*sources[name])] += ms
      ops[name] += ms
      events += 1
  total = sum(groups.values())
  emit(part="profile", impl="radjax", device=device_kind, batch=batch, dtype=dtype,
       implementations=implementations, wall_ms_per_step_traced=wall_ms, op_ms_per_step=total,
       ops_per_step=events / args.steps,
       unmatched_ms_per_step=sum(unmatched.values()),
       unmatched_events_per_step=sum(1 for line in lines for e in line.events
                                     if dict(e.stats).get("hlo_op", e.name) not in sources)
       / args.steps,
       top_unmatched={n: round(ms, 3) for n, ms in unmatched.most_common(10)},
       unmatched_stat_names=sorted(unmatched_stats)[:20],
       groups={g: round(ms, 2) for g, ms in groups.most_common()},
       top_ops={f"{n} ({'/'.join(sources[n][0].split('/')[-2:]) or '?'})": round(ms, 3)
                for n, ms in ops.most_common(12)},
       timelines=sorted({f"{pl.name}:{line.name}" for pl in (gpu_planes or planes)
                         for line in pl.lines})[:20])


# ----------------------------------------------------------------------------------------------
# Peers
# ----------------------------------------------------------------------------------------------

def bench_keras_step(batch: int, args) -> None:
  try:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    import tf_keras
  except ImportError as e:
    emit(part="train_step", impl="keras", skipped=f"not installed ({e.name})")
    return
  tf.config.set_visible_devices([], "GPU")  # the CPU peer; Keras-on-GPU is not benchmarked
  base = tf_keras.applications.InceptionV3(weights=None, include_top=False,
                                           input_shape=(args.image_size, args.image_size, 3))
  x = tf_keras.layers.GlobalAveragePooling2D()(base.output)
  x = tf_keras.layers.Dense(256, activation="relu")(x)
  x = tf_keras.layers.Dropout(0.5)(x)
  out = tf_keras.layers.Dense(1, activation="sigmoid")(x)
  model = tf_keras.Model(base.input, out)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                loss="binary_crossentropy", metrics=["accuracy"])
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(np.float32)
  labels = rng.integers(0, 2, (batch, 1)).astype(np.float32)
  start = time.perf_counter()
  model.train_on_batch(images, labels)  # builds the tf.function graph
  compile_s = time.perf_counter() - start

  def run(n):
    return lambda: [model.train_on_batch(images, labels) for _ in range(n)]

  run(args.warmup)()
  times = timed_repeats(run(args.steps), args.repeats)
  ms = statistics.median(times) / args.steps * 1e3
  emit(part="train_step", impl="keras", device="cpu", batch=batch, dtype="float32",
       image_size=args.image_size, ms_per_step=ms, images_per_s=batch * 1e3 / ms,
       compile_s=compile_s, repeats=[t / args.steps * 1e3 for t in times],
       version=tf_keras.__version__)


def bench_torch_step(device_kind: str, batch: int, mode: str, args,
                     compile_mode: str | None = None) -> None:
  """torchvision's InceptionV3 with the paper's head and Adam, eager or (`compile_mode`, one of
  torch.compile's modes) compiled by inductor; `mode` fp32, or bf16 autocast with channels_last."""
  impl = f"torch-{mode}" if compile_mode is None else f"torch-compile-{mode}"
  try:
    import torch
    import torchvision
  except ImportError as e:
    emit(part="train_step", impl=impl, skipped=f"not installed ({e.name})")
    return
  device = torch.device("cuda" if device_kind == "gpu" else "cpu")
  backbone = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
  backbone.fc = torch.nn.Sequential(torch.nn.Linear(2048, 256), torch.nn.ReLU(),
                                    torch.nn.Dropout(0.5), torch.nn.Linear(256, 1))
  model = backbone.to(device).train()
  bf16 = mode == "bf16"
  if bf16:
    model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
  images = torch.rand(batch, 3, args.image_size, args.image_size, device=device) * 2 - 1
  if bf16:
    images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, 2, (batch, 1), device=device).float()
  loss_fn = torch.nn.BCEWithLogitsLoss()
  # The forward and (through AOTAutograd) backward pass compiled; Adam stays eager, as most
  # compiled training loops run it.
  forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(forward(images).float(), labels)
    loss.backward()
    opt.step()

  def run(n):
    def once():
      for _ in range(n):
        step()
      if device.type == "cuda":
        torch.cuda.synchronize()
    return once

  start = time.perf_counter()
  run(1)()
  compile_s = time.perf_counter() - start
  run(args.warmup)()
  times = timed_repeats(run(args.steps), args.repeats)
  ms = statistics.median(times) / args.steps * 1e3
  peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
  if device.type == "cuda":  # give the memory back for the next JAX measurement
    del model, backbone, opt, images, labels, forward
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
  if compile_mode is not None:
    torch._dynamo.reset()  # the next measurement compiles afresh, as a new process would
  emit(part="train_step", impl=impl, device=device_kind, batch=batch,
       dtype="bfloat16" if bf16 else "float32", image_size=args.image_size, ms_per_step=ms,
       images_per_s=batch * 1e3 / ms, first_step_s=compile_s, peak_memory_gb=peak,
       repeats=[t / args.steps * 1e3 for t in times], version=torch.__version__,
       **({} if compile_mode is None else {"compile_mode": compile_mode}))


# PyTorch's counterpart of each radjax dtype: float32, or bfloat16 autocast with channels_last.
TORCH_MODES = {"float32": "fp32", "bfloat16": "bf16"}


def bench_compile_cache(device_kind: str, args) -> None:
  """The batch-5 float32 step's compile time in two fresh processes sharing one persistent
  compilation cache: cold (empty cache), then warm (what a second `radjax train` pays)."""
  import subprocess

  with tempfile.TemporaryDirectory() as cache:
    seconds = []
    for _ in ("cold", "warm"):
      out = subprocess.run([sys.executable, __file__, "--compile-once", device_kind, cache,
                            "--image-size", str(args.image_size)],
                           capture_output=True, text=True, check=True).stdout
      seconds.append(json.loads(out.strip().splitlines()[-1])["compile_s"])
  emit(part="compile_cache", impl="radjax", device=device_kind, batch=5, dtype="float32",
       cold_s=seconds[0], warm_s=seconds[1])


def _compile_once(device_kind: str, cache: str, args) -> None:
  import jax

  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  compile_s = _compiled_radjax_step(device_kind, 5, "float32", args)[5]
  print(json.dumps({"compile_s": compile_s}))


# Intel's recipe for XLA's oneDNN route on Xeon CPUs: oneDNN convolutions and matmuls as custom
# calls, XLA's older oneDNN and the XNNPACK/YNNPACK routes off, the older fusion emitter. XLA reads
# XLA_FLAGS once per process, so each setting is measured in a child process of its own.
ONEDNN_RECIPE = ("--xla_cpu_experimental_onednn_custom_call=true --xla_cpu_use_onednn=false "
                 "--xla_cpu_experimental_ynn_fusion_type=invalid --xla_cpu_use_xnnpack=false "
                 "--xla_backend_extra_options=xla_cpu_disable_new_fusion_emitter")
ONEDNN_CONV_IMPLS = ("xla", "gemm")
# The recipe must not change the step's numbers more than float32 reassociation does: its first
# step's loss and gradients are compared with the default's, and that difference with the one
# between radjax' two convolution lowerings (both accepted as the same step) at this factor.
ONEDNN_SCALE_FACTOR = 2.0


def _first_step_numbers(run, data, key):
  """The paper's loss and its gradients for the run's initial state on `data` (dropout from
  `key`): what a train step's update is made of."""
  import jax
  import numpy as np

  from radjax.training import losses

  state = run.state

  def loss_fn(params):
    logits, _ = run.model.apply({"params": params, "batch_stats": state.batch_stats},
                                data["image"], train=True, rngs={"dropout": key},
                                mutable=["batch_stats"])
    return losses.cross_entropy(logits, data["label"]).mean()

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(state.params)
  flat = np.concatenate([np.asarray(g, np.float32).ravel() for g in jax.tree.leaves(grads)])
  return float(loss), flat


def _step_child_args(args) -> list[str]:
  """The flags a child process that times the step at --variants-at needs from this one."""
  return ["--variants-at", args.variants_at, "--image-size", str(args.image_size),
          "--warmup", str(args.warmup), "--steps", str(args.steps), "--repeats", str(args.repeats)]


def _onednn_child(out_dir: str, args) -> None:
  """In a process whose XLA_FLAGS the parent chose: the CPU train step at --variants-at with
  each conv_impl, and (float32 points) the first step's loss and gradients, saved to out_dir."""
  import jax
  import numpy as np

  from radjax.training import run as run_lib

  for conv_impl in ONEDNN_CONV_IMPLS:
    for batch, dtype in _points(args.variants_at):
      bench_radjax_step("cpu", batch, dtype, args, f"conv_impl={conv_impl}")
      if dtype != "float32":
        continue
      config = _step_config(batch, dtype, args, [f"--config.conv_impl={conv_impl}"])
      run = run_lib.build(config, jax.devices("cpu")[:1])
      loss, grads = _first_step_numbers(run, _random_batch(batch, args), jax.random.key(0))
      np.savez(os.path.join(out_dir, f"{conv_impl}-{batch}.npz"), loss=loss, grads=grads)


def bench_onednn(args) -> None:
  """The CPU train step with conv_impl xla and gemm, without and with ONEDNN_RECIPE (each in a
  fresh process), Keras at the same batches in this one; then whether the recipe keeps the first
  step's loss and gradients."""
  import subprocess

  import numpy as np

  with tempfile.TemporaryDirectory() as scratch:
    for name, flags in (("default", ""), ("onednn", ONEDNN_RECIPE)):
      os.makedirs(os.path.join(scratch, name))
      child = subprocess.run(
          [sys.executable, __file__, "--onednn-child", os.path.join(scratch, name),
           *_step_child_args(args)],
          env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True)
      records = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
      for record in records:
        emit(**record, onednn=name)
      if child.returncode != 0:
        emit(part="onednn", impl="radjax", onednn=name,
             skipped=f"child exited {child.returncode}: {child.stderr.strip()[-300:]}")
    for batch in dict.fromkeys(b for b, _ in _points(args.variants_at)):
      if "keras" in args.peers.split(","):
        bench_keras_step(batch, args)
    # Each conv_impl with the recipe against itself without; and, for scale, the two conv_impls
    # against each other without it (two float32 orders of summation of the same convolutions).
    pairs = [(c, ("default", c), ("onednn", c)) for c in ONEDNN_CONV_IMPLS]
    pairs.append(("xla vs gemm", ("default", "xla"), ("default", "gemm")))
    for batch in (b for b, dtype in _points(args.variants_at) if dtype == "float32"):
      for compared, *sides in pairs:
        paths = [os.path.join(scratch, name, f"{conv_impl}-{batch}.npz")
                 for name, conv_impl in sides]
        if not all(os.path.exists(p) for p in paths):
          continue
        first, second = (np.load(p) for p in paths)
        loss_diff = abs(float(first["loss"]) - float(second["loss"]))
        grad_diff = float(np.max(np.abs(first["grads"] - second["grads"])) /
                          max(float(np.max(np.abs(first["grads"]))), 1e-30))
        emit(part="onednn_numerics", impl="radjax", conv_impl=compared, batch=batch,
             loss=float(first["loss"]), loss_abs_diff=loss_diff,
             grad_max_diff_fraction=grad_diff)


# What in ONEDNN_RECIPE makes the CPU step faster: the step under each (conv_impl, XLA_FLAGS)
# setting exactly as written, each in a process of its own ("" is XLA's own defaults; radjax'
# CPU_XLA_FLAGS only where a row names them).
XLA_FLAG_SETTINGS = (
    ("xla", ""),
    ("xla", "--xla_cpu_experimental_ynn_fusion_type="),  # radjax.CPU_XLA_FLAGS
    ("xla", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"),
    ("xla", "--xla_cpu_experimental_ynn_fusion_type=invalid"),
    ("xla", "--xla_cpu_use_xnnpack=false"),
    ("xla", "--xla_backend_extra_options=xla_cpu_disable_new_fusion_emitter"),
    ("xla", ONEDNN_RECIPE),
    ("gemm", ""),
    ("gemm", "--xla_cpu_experimental_ynn_fusion_type="),
)


def hlo_library_calls(hlo_text: str) -> dict:
  """How many of a compiled program's instructions XLA hands to YNNPACK (all, and those that are
  convolutions) and to oneDNN: what an XLA_FLAGS setting changed in the program."""
  lines = hlo_text.splitlines()
  ynn = [line for line in lines if '"kind":"__ynn_fusion"' in line]
  return {"ynn_fusions": len(ynn),
          "ynn_convolutions": sum("conv_general_dilated" in line for line in ynn),
          "onednn_calls": sum('custom_call_target="__onednn' in line for line in lines)}


def _xla_flags_child(conv_impl: str, args) -> None:
  """In a process whose XLA_FLAGS the parent chose: the CPU step at --variants-at, and what its
  compiled program hands to libraries."""
  for batch, dtype in _points(args.variants_at):
    compiled = bench_radjax_step("cpu", batch, dtype, args, f"conv_impl={conv_impl}")
    print(json.dumps({"part": "hlo_library_calls", **hlo_library_calls(compiled.as_text())}),
          flush=True)


def bench_xla_flags(args) -> None:
  """The CPU train step under each of XLA_FLAG_SETTINGS, each in a fresh process."""
  import subprocess

  for conv_impl, flags in XLA_FLAG_SETTINGS:
    child = subprocess.run(
        [sys.executable, __file__, "--xla-flags-child", conv_impl, *_step_child_args(args)],
        env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True)
    records = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    for step, calls in zip(records[::2], records[1::2]):
      calls.pop("part")
      emit(**{**step, "xla_flags": flags}, **calls, study="xla_flags")
    if child.returncode != 0:
      emit(part="xla_flags", impl="radjax", xla_flags=flags, conv_impl=conv_impl,
           skipped=f"child exited {child.returncode}: {child.stderr.strip()[-300:]}")


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


# ----------------------------------------------------------------------------------------------
# Input pipeline and end to end
# ----------------------------------------------------------------------------------------------

def _tensorflow_available(part: str) -> bool:
  """The pipeline and end-to-end parts need TensorFlow (a CUDA machine may have none)."""
  try:
    from radjax.data import preprocess
    preprocess.tensorflow()
  except ImportError as e:
    emit(part=part, impl="radjax", skipped=f"tensorflow not installed ({e.name})")
    return False
  return True


def bench_pipeline(args) -> None:
  if not _tensorflow_available("pipeline"):
    return
  from radjax.training import config as config_lib
  from radjax.data import files, listing

  config = config_lib.load_config(REPO / "configs" / "hello_world.py",
                                  [f"--config.image_size={args.image_size}"])
  folders = listing.list_folders(args.data_dir)
  pipeline = files.Pipeline(folders, config)
  n = pipeline.steps_per_epoch(config.batch_size) * config.batch_size
  start = time.perf_counter()
  for _ in pipeline.train_batches(config.batch_size, 0):
    pass
  first_epoch_s = time.perf_counter() - start  # decoding + resizing + caching included

  def epochs():  # as the training loop iterates: one pipeline over the epochs
    for _ in pipeline.train_batches(config.batch_size, 1, args.pipeline_epochs):
      pass

  times = timed_repeats(epochs, args.repeats)
  emit(part="pipeline", impl="radjax", images_per_s=n * args.pipeline_epochs / statistics.median(times),
       first_epoch_images_per_s=n / first_epoch_s, image_size=args.image_size,
       batch=config.batch_size)

  try:
    from tf_keras.preprocessing.image import ImageDataGenerator
  except ImportError as e:
    emit(part="pipeline", impl="keras", skipped=f"not installed ({e.name})")
    return
  aug = config.augment  # the same settings as radjax' pipeline, from the config
  generator = ImageDataGenerator(rotation_range=aug.rotation_range,
                                 width_shift_range=aug.width_shift_range,
                                 height_shift_range=aug.height_shift_range,
                                 shear_range=aug.shear_range, zoom_range=aug.zoom_range,
                                 horizontal_flip=aug.horizontal_flip, fill_mode=aug.fill_mode,
                                 rescale=1.0 / 255)
  flow = generator.flow_from_directory(str(pathlib.Path(args.data_dir) / "TRAIN"),
                                       target_size=(args.image_size, args.image_size),
                                       batch_size=config.batch_size, class_mode="binary", seed=0)
  batches = len(flow) * args.pipeline_epochs

  def keras_epochs():
    for _ in range(batches):
      next(flow)

  times = timed_repeats(keras_epochs, args.repeats)
  emit(part="pipeline", impl="keras", images_per_s=flow.n * args.pipeline_epochs / statistics.median(times),
       image_size=args.image_size, batch=config.batch_size)


def bench_end_to_end(args) -> None:
  """hello_world epochs through `train.train_and_evaluate`, from class folders (tf.data) or, with
  `--arrays`, from a pre-decoded .npz with device augmentation (no TensorFlow needed)."""
  augment_on = args.augment_on or ("device" if args.arrays else "host")
  if not args.arrays and not _tensorflow_available("end_to_end"):
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
  import subprocess

  command = [sys.executable, __file__, "--device", device_kind, "--parts", "e2e", "--peers", "none",
             "--e2e-epochs", str(args.e2e_epochs), "--image-size", str(args.image_size),
             "--data-dir", args.data_dir]
  command += ["--arrays", args.arrays] if args.arrays else []
  command += ["--augment-on", args.augment_on] if args.augment_on else []
  child = subprocess.run(command, env={**os.environ, "JAX_PLATFORMS": JAX_PLATFORMS[device_kind]},
                         capture_output=True, text=True)
  records = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
  measured = [r for r in records if r["part"] == "end_to_end" and "skipped" not in r]
  if child.returncode != 0 or not measured:
    why = next((r["skipped"] for r in records if "skipped" in r), child.stderr.strip()[-300:])
    raise RuntimeError(f"the {device_kind} child (exit {child.returncode}): {why}")
  for record in measured:
    emit(**record)


# ----------------------------------------------------------------------------------------------

def _label(r: dict) -> str:
  if r.get("compile_mode"):
    return f"{r['impl']} ({r['compile_mode']})"
  settings = [r["variant"]] if r["impl"] == "radjax" and r.get("variant") else []
  settings += [f"XLA_FLAGS={r['xla_flags']}"] if r.get("xla_flags") else []
  return f"{r['impl']} ({'; '.join(settings)})" if settings else r["impl"]


SOURCE = "_source"  # where a record came from, for `--table`: file and machine


def _tagged(name: str, records: list[dict]) -> list[dict]:
  """`records` of file `name`, each tagged with its file and the machine of the last "machine"
  record before it (runs appended to one file on one machine stay comparable)."""
  machine_of = None
  for r in records:
    if r.get("part") == "machine":
      machine_of = json.dumps({k: r.get(k) for k in ("cpu", "cores", "devices")}, sort_keys=True)
    r[SOURCE] = f"{name} {machine_of}"
  return records


def table() -> str:
  steps = [r for r in RESULTS if r["part"] == "train_step" and "skipped" not in r
           and "onednn" not in r and "study" not in r]
  base = [r for r in steps if r["impl"] == "radjax" and not r.get("variant")]

  def ours_at(device, batch, dtype, xla_flags="", source=None):
    # Only a record of the same machine in the same file (`--table`; one run: all of them) is
    # a fair reference: another file may be another card, another day, another load.
    return next((o for o in base if o["device"] == device and o["batch"] == batch
                 and o["dtype"] == dtype and o.get("xla_flags", "") == xla_flags
                 and o.get(SOURCE) == source), None)

  lines = ["| part | impl | device | batch | dtype | ms/step | images/s | compile s | peak GiB "
           "| radjax / this |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in steps:
    # Peers and variants against radjax at the same batch and dtype (float32 if it has none).
    ours = (ours_at(r["device"], r["batch"], r["dtype"], source=r.get(SOURCE))
            or ours_at(r["device"], r["batch"], "float32", source=r.get(SOURCE)))
    ratio = f"{ours['images_per_s'] / r['images_per_s']:.2f}x" if ours and r is not ours else ""
    compile_s = r.get("compile_s", r.get("first_step_s"))
    peak = f"{r['peak_memory_gb']:.1f}" if r.get("peak_memory_gb") is not None else ""
    if r.get("peak_memory_kind") == "host RSS":
      peak += " (RSS)"
    lines.append(f"| train step | {_label(r)} | {r['device']} | {r['batch']} | {r['dtype']} | "
                 f"{r['ms_per_step']:.1f} | {r['images_per_s']:.1f} | {compile_s:.1f} | {peak} "
                 f"| {ratio} |")
  for r in base:  # against the fastest PyTorch row (eager or compiled) at its device and batch
    torch_rows = [t for t in steps if t["impl"].startswith("torch") and t["device"] == r["device"]
                  and t["batch"] == r["batch"] and t.get(SOURCE) == r.get(SOURCE)]
    if torch_rows and not r.get("xla_flags"):
      fastest = max(torch_rows, key=lambda t: t["images_per_s"])
      lines.append(f"| radjax {r['dtype']} / fastest PyTorch ({_label(fastest)}, {fastest['dtype']}) "
                   f"| radjax | {r['device']} | {r['batch']} | {r['dtype']} | | | | | "
                   f"**{r['images_per_s'] / fastest['images_per_s']:.2f}x** |")
  for r in base:
    if r["device"] == "gpu" and not r.get("xla_flags"):
      cpu = ours_at("cpu", r["batch"], r["dtype"], source=r.get(SOURCE))
      if cpu:
        lines.append(f"| GPU/CPU | radjax | gpu vs cpu | {r['batch']} | {r['dtype']} | | "
                     f"{r['images_per_s'] / cpu['images_per_s']:.1f}x | | | |")
  pipes = {(r.get(SOURCE), r["impl"]): r for r in RESULTS
           if r["part"] == "pipeline" and "skipped" not in r}
  for (source, impl), r in pipes.items():
    ours = pipes.get((source, "radjax"))
    ratio = f"{ours['images_per_s'] / r['images_per_s']:.2f}x" if ours and r is not ours else ""
    lines.append(f"| input pipeline | {impl} | cpu | {r['batch']} | float32 | | "
                 f"{r['images_per_s']:.1f} | | | {ratio} |")
  for r in RESULTS:
    if r["part"] == "compile_cache" and "skipped" not in r:
      lines.append(f"| first-step compile, fresh process: cold / warm cache | radjax | {r['device']} "
                   f"| 5 | float32 | | | {r['cold_s']:.1f} / {r['warm_s']:.1f} | | |")
  for r in RESULTS:
    if r["part"] == "predict_cli" and "skipped" not in r:
      lines.append(f"| `radjax predict` of 1 file, fresh process: cold / warm cache (s) | radjax "
                   f"| {r['device']} | 1 | float32 | | | {r['cold_s']:.1f} / {r['warm_s']:.1f} | | |")
  for r in RESULTS:
    if r["part"] != "end_to_end" or "skipped" in r:
      continue
    flags = f", XLA_FLAGS={r['xla_flags']}" if r.get("xla_flags") else ""
    lines += ["", f"hello_world end to end ({r['data']}, augment on {r['augment_on']}, "
              f"{r.get('device', 'default')} backend{flags}), per epoch:", "",
              "| epoch | epoch s | train s | precise BN s | validation s | train images/s "
              "| train s / (steps x step) | epoch s / (steps x step + validation s) |",
              "|---|---|---|---|---|---|---|---|"]
    step = ours_at(r.get("device"), r.get("batch"), "float32", r.get("xla_flags", ""),
                   r.get(SOURCE))
    for i, epoch_s in enumerate(r["epoch_s"]):
      train_s = r.get("train_s", [None] * len(r["epoch_s"]))[i]
      pure = (r["steps_per_epoch"] * step["ms_per_step"] / 1e3
              if step and r.get("steps_per_epoch") else None)
      over = f"{train_s / pure:.2f}x" if pure and train_s else ""
      whole = f"{epoch_s / (pure + r['val_s'][i]):.2f}x" if pure and "val_s" in r else ""
      phases = [f"{r[k][i]:.3f}" if k in r else "" for k in ("train_s", "precise_bn_s", "val_s")]
      lines.append(f"| {i + 1} | {epoch_s:.3f} | {' | '.join(phases)} | "
                   f"{r['train_images_per_s'][i]:.1f} | {over} | {whole} |")
  for r in RESULTS:
    if r["part"] == "profile" and "skipped" not in r:
      impl = ", ".join(f"{k}={v}" for k, v in r.get("implementations", {}).items())
      lines += ["", f"Where a {r['device']} train step's time goes (batch {r['batch']}, "
                f"{r.get('dtype', 'float32')}, {impl}; {r['wall_ms_per_step_traced']:.1f} ms wall "
                f"while tracing, {r['op_ms_per_step']:.1f} ms of ops):", "",
                "| ops | ms/step | share |", "|---|---|---|"]
      lines += [f"| {g} | {ms:.2f} | {100 * ms / max(r['op_ms_per_step'], 1e-9):.1f}% |"
                for g, ms in r["groups"].items()]
      if r.get("unmatched_ms_per_step"):
        lines.append(f"| (not in the table: kernels no HLO op claims) | "
                     f"{r['unmatched_ms_per_step']:.2f} | |")
  lines += _onednn_table() + _xla_flags_table() + _gpu_vs_cpu_table()
  if len(lines) > 2 and not lines[2].startswith("|"):  # other tables, but no plain step row
    lines = lines[2:]
    while lines and not lines[0]:
      lines.pop(0)
  skipped = [f"{r['part']} {r.get('impl', '')}: {r['skipped']}" for r in RESULTS if "skipped" in r]
  return "\n".join(lines + ([""] + [f"- skipped: {s}" for s in skipped] if skipped else []))


def _onednn_table() -> list[str]:
  """The oneDNN part's rows: each conv_impl without and with the recipe, against Keras of the
  same file and machine at the same batch, and whether the recipe kept the step's numbers."""
  ours = [r for r in RESULTS if r["part"] == "train_step" and "onednn" in r and "skipped" not in r]
  if not ours:
    return []
  keras = {(r.get(SOURCE), r["batch"]): r for r in RESULTS if r["part"] == "train_step"
           and r["impl"] == "keras" and "skipped" not in r}
  numerics = {(r.get(SOURCE), r["conv_impl"], r["batch"]): r for r in RESULTS
              if r["part"] == "onednn_numerics"}
  lines = ["", "CPU train step with XLA's oneDNN recipe (`--parts onednn`; each XLA_FLAGS setting in "
           "a process of its own), against Keras `train_on_batch` in the same run:", "",
           "| conv_impl | XLA_FLAGS | batch | dtype | ms/step | Keras ms/step | Keras ms / radjax ms "
           "| recipe vs default: loss diff, max gradient diff / max gradient |",
           "|---|---|---|---|---|---|---|---|"]
  for r in ours:
    conv_impl = r["variant"].split("=", 1)[1]
    peer = keras.get((r.get(SOURCE), r["batch"]))
    versus = (f"{peer['ms_per_step']:.1f} | {peer['ms_per_step'] / r['ms_per_step']:.2f}x"
              if peer else " | ")
    check = numerics.get((r.get(SOURCE), conv_impl, r["batch"]))
    scale = numerics.get((r.get(SOURCE), "xla vs gemm", r["batch"]))
    same = ""
    if r["onednn"] != "default" and check:
      same = f"{check['loss_abs_diff']:.1e}, {check['grad_max_diff_fraction']:.1e}"
      if scale:
        within = all(check[k] <= ONEDNN_SCALE_FACTOR * scale[k]
                     for k in ("loss_abs_diff", "grad_max_diff_fraction"))
        same += (f" ({'within' if within else 'beyond'} {ONEDNN_SCALE_FACTOR:g}x the lowerings' "
                 "difference)")
    flags = "oneDNN recipe" if r["onednn"] != "default" else "radjax' own"
    lines.append(f"| {conv_impl} | {flags} | {r['batch']} | {r['dtype']} | "
                 f"{r['ms_per_step']:.1f} | {versus} | {same} |")
  for (source, compared, batch), check in numerics.items():
    if " vs " in compared and source == ours[0].get(SOURCE):
      lines.append(f"| (for scale: {compared}, radjax' flags) | | {batch} | float32 | | | | "
                   f"{check['loss_abs_diff']:.1e}, {check['grad_max_diff_fraction']:.1e} |")
  return lines


def _xla_flags_table() -> list[str]:
  """The xla_flags part's rows: each setting's step time and what its program hands to YNNPACK
  and oneDNN, against the first row of its file (XLA's defaults)."""
  rows = [r for r in RESULTS if r.get("study") == "xla_flags" and "skipped" not in r]
  if not rows:
    return []
  lines = ["", "CPU train step under each XLA_FLAGS setting alone (`--parts xla_flags`; each in a "
           "process of its own, exactly as written):", "",
           "| conv_impl | XLA_FLAGS | batch | dtype | ms/step | vs. the file's first row "
           "| YNNPACK fusions (convolutions) | oneDNN calls |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    first = next(o for o in rows if o.get(SOURCE) == r.get(SOURCE))
    change = (f"{r['ms_per_step'] / first['ms_per_step'] - 1:+.0%}" if r is not first else "")
    flags = f"`{r['xla_flags']}`" if r["xla_flags"] else "(none: XLA's defaults)"
    lines.append(f"| {r['variant'].split('=', 1)[1]} | {flags} | {r['batch']} | {r['dtype']} | "
                 f"{r['ms_per_step']:.1f} | {change} | {r['ynn_fusions']} "
                 f"({r['ynn_convolutions']}) | {r['onednn_calls']} |")
  return lines


def _gpu_vs_cpu_table() -> list[str]:
  """`--device both`: the hello_world epoch end to end and the bare step on each device of one
  run, side by side with CPU / GPU ratios, and the machine they ran on."""
  e2e = {(r.get(SOURCE), r.get("device")): r for r in RESULTS
         if r["part"] == "end_to_end" and "skipped" not in r}
  lines = []
  for (source, device), gpu in e2e.items():
    cpu = e2e.get((source, "cpu"))
    if device != "gpu" or cpu is None:
      continue
    machine = next((r for r in RESULTS if r["part"] == "machine" and r.get(SOURCE) == source), {})
    gpus = sorted({d.split(":", 1)[1] for d in machine.get("devices", []) if d.startswith("gpu")})
    lines += ["", f"GPU against CPU on one machine ({', '.join(gpus) or 'GPU'}; CPU: "
              f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores), hello_world at "
              f"{gpu.get('image_size')}x{gpu.get('image_size')}, {gpu['data']}, augment on "
              f"{gpu['augment_on']}:", "", "| what | CPU | GPU | CPU / GPU |", "|---|---|---|---|"]

    def row(what, c, g, unit):
      lines.append(f"| {what} | {c:.3f} {unit} | {g:.3f} {unit} | {c / g:.1f}x |")

    row("epoch 1 (compiling included)", cpu["epoch_s"][0], gpu["epoch_s"][0], "s")
    if len(cpu["epoch_s"]) > 1 and len(gpu["epoch_s"]) > 1:
      for key, what in (("epoch_s", "later epochs, mean"), ("train_s", "  training"),
                        ("precise_bn_s", "  precise BN"), ("val_s", "  validation")):
        row(what, statistics.mean(cpu[key][1:]), statistics.mean(gpu[key][1:]), "s")
    steps = {r["device"]: r for r in RESULTS if r["part"] == "train_step" and r["impl"] == "radjax"
             and not r.get("variant") and r.get(SOURCE) == source and "skipped" not in r
             and r["batch"] == gpu["batch"] and r["dtype"] == "float32"}
    if "cpu" in steps and "gpu" in steps:
      row(f"train step alone, batch {gpu['batch']} float32", steps["cpu"]["ms_per_step"],
          steps["gpu"]["ms_per_step"], "ms")
  return lines


def _points(text: str) -> list[tuple[int, str]]:
  """"5:float32,256:bfloat16" -> [(5, "float32"), (256, "bfloat16")]."""
  return [(int(b), d) for b, d in (item.split(":") for item in text.split(",") if item)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--device", choices=["cpu", "gpu", "both"], default="cpu")
  parser.add_argument("--batch-sizes", help="comma-separated (default: 5,32 on CPU, 5,64,256 on GPU)")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--step-at", help="batch:dtype points of the step part, comma-separated "
                                        "(instead of every --batch-sizes x --dtypes pair)")
  parser.add_argument("--cpu-step-at", default="5:float32",
                      help="with --device both: the CPU's step points (a large batch takes "
                           "minutes a step on a CPU)")
  parser.add_argument("--image-size", type=int, default=299)
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
  parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
  parser.add_argument("--peers", default="keras,torch", help="comma-separated, or 'none'")
  parser.add_argument("--torch-compile", default="default",
                      help="torch.compile modes to time beside PyTorch eager, comma-separated "
                           "(e.g. default,reduce-overhead,max-autotune; '' for eager only)")
  parser.add_argument("--parts", default="step,pipeline,e2e",
                      help="comma-separated subset of step,e2e,pipeline,predict,compile,profile,"
                           "variants, run in that order (profile: where a train step's time goes, "
                           "by kind of op; predict: `radjax predict` of one file in fresh "
                           "processes, cold and warm compilation cache; compile: cold and "
                           "warm-cache compile time in fresh processes; variants: the train step "
                           "with other implementations; onednn: the CPU step with conv_impl xla "
                           "and gemm, without and with XLA's oneDNN recipe, and Keras, at "
                           "--variants-at; xla_flags: the CPU step under each of "
                           "XLA_FLAG_SETTINGS alone, at --variants-at)")
  parser.add_argument("--profile-at", default="5:float32",
                      help="batch:dtype points to profile, comma-separated")
  parser.add_argument("--variants", default="pool_impl=window;bn_grad=autodiff;conv_impl=gemm",
                      help="semicolon-separated config overrides, each 'name=value,...'")
  parser.add_argument("--variants-at", default="5:float32",
                      help="batch:dtype points at which to time each variant")
  parser.add_argument("--pipeline-epochs", type=int, default=20,
                      help="epochs per timed pipeline run (hello_world trains 20 in one pipeline)")
  parser.add_argument("--e2e-epochs", type=int, default=3,
                      help="epochs of the end-to-end run (the first includes compiling)")
  parser.add_argument("--data-dir", default=str(DATASET))
  parser.add_argument("--arrays", help="end to end from this .npz (`radjax export-arrays`), "
                                       "with device augmentation: no TensorFlow needed")
  parser.add_argument("--augment-on", choices=["host", "device"],
                      help="end-to-end augmentation (default: device with --arrays, else host)")
  parser.add_argument("--deadline", type=float,
                      help="seconds: start no further measurement after this long (those left "
                           "are reported as skipped), so a time-limited machine returns a table")
  parser.add_argument("--jsonl", help="also append every JSON line to this file")
  parser.add_argument("--table", nargs="+", metavar="JSONL",
                      help="print the table of earlier runs' JSON lines and exit")
  parser.add_argument("--compile-once", nargs=2, metavar=("DEVICE", "CACHE"),
                      help=argparse.SUPPRESS)  # the child process of the compile_cache part
  parser.add_argument("--onednn-child", metavar="DIR",
                      help=argparse.SUPPRESS)  # a child process of the onednn part
  parser.add_argument("--xla-flags-child", metavar="CONV_IMPL",
                      help=argparse.SUPPRESS)  # a child process of the xla_flags part
  args = parser.parse_args()
  if args.xla_flags_child:
    import radjax  # noqa: F401
    # Exactly the setting under test, without radjax' defaults: XLA reads XLA_FLAGS when JAX
    # starts its backend, after this.
    os.environ["XLA_FLAGS"] = USER_XLA_FLAGS
    _xla_flags_child(args.xla_flags_child, args)
    return
  if args.compile_once:
    _compile_once(*args.compile_once, args)
    return
  if args.onednn_child:
    import radjax  # noqa: F401  (its XLA defaults, as in any run)
    _onednn_child(args.onednn_child, args)
    return
  if args.table:
    for name in args.table:
      if not os.path.exists(name):
        sys.exit(f"benchmark: {name}: no such file (no measurement finished?)")
      RESULTS.extend(_tagged(name, [json.loads(line) for line in open(name)
                                    if line.startswith("{")]))
    print(table())
    return
  if args.jsonl:
    global _JSONL
    _JSONL = open(args.jsonl, "a")

  import radjax  # its XLA defaults, before JAX starts its backend
  import jax

  began = time.perf_counter()
  emit(part="machine", **machine(), commit=commit(), jax=jax.__version__,
       xla_flags=os.environ.get("XLA_FLAGS", ""),
       devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()],
       date=time.strftime("%Y-%m-%d"))
  kinds = ["cpu", "gpu"] if args.device == "both" else [args.device]
  parts, peers = args.parts.split(","), args.peers.split(",")
  if "gpu" in kinds and not any(d.platform == "gpu" for d in jax.devices()):
    sys.exit("benchmark: --device gpu needs a GPU visible to JAX (pip install -e '.[cuda]')")

  def measure(part: str, what: str, fn, *fn_args) -> None:
    """Runs one measurement unless past --deadline; a failure is reported, not fatal."""
    if args.deadline is not None and time.perf_counter() - began > args.deadline:
      emit(part=part, impl=what, skipped=f"--deadline {args.deadline:.0f} s reached")
      return
    try:
      fn(*fn_args)
    except Exception as e:  # one broken measurement must not lose the others' figures
      emit(part=part, impl=what, skipped=f"failed: {type(e).__name__}: {str(e)[:300]}")

  for kind in kinds:
    if kind == "cpu" and args.device == "both":
      points = _points(args.cpu_step_at)
    elif args.step_at:
      points = _points(args.step_at)
    else:
      points = [(int(b), d) for b in (args.batch_sizes or DEFAULT_BATCHES[kind]).split(",")
                for d in args.dtypes.split(",")]
    if "step" in parts:
      for batch in dict.fromkeys(b for b, _ in points):  # in order, once each
        for dtype in (d for b, d in points if b == batch):
          measure("train_step", f"radjax {kind} {batch} {dtype}", bench_radjax_step, kind, batch,
                  dtype, args)
        if "keras" in peers and kind == "cpu":
          measure("train_step", "keras", bench_keras_step, batch, args)
        # With --device both the CPU runs radjax alone: the comparison is radjax on two devices,
        # and compiling PyTorch for the CPU too would spend the GPU machine's time (--device cpu
        # measures it).
        if "torch" in peers and not (kind == "cpu" and args.device == "both"):
          for dtype in (d for b, d in points if b == batch):
            mode = TORCH_MODES[dtype]
            measure("train_step", f"torch-{mode}", bench_torch_step, kind, batch, mode, args)
            for compile_mode in filter(None, args.torch_compile.split(",")):
              measure("train_step", f"torch-compile-{mode} ({compile_mode})", bench_torch_step,
                      kind, batch, mode, args, compile_mode)
  if "e2e" in parts:
    for kind in kinds:
      if kind == jax.default_backend():
        measure("end_to_end", f"radjax {kind}", bench_end_to_end, args)
      else:
        measure("end_to_end", f"radjax {kind}", bench_end_to_end_elsewhere, kind, args)
  if "pipeline" in parts:
    measure("pipeline", "radjax", bench_pipeline, args)
  if "predict" in parts:
    measure("predict_cli", "radjax", bench_predict_cli, args)
  if "compile" in parts:
    for kind in kinds:
      measure("compile_cache", f"radjax {kind}", bench_compile_cache, kind, args)
  if "profile" in parts:
    for kind in kinds:
      for batch, dtype in _points(args.profile_at):
        measure("profile", f"radjax {kind} {batch} {dtype}", profile_radjax_step, kind, batch,
                dtype, args)
  if "onednn" in parts:
    measure("onednn", "radjax", bench_onednn, args)
  if "xla_flags" in parts:
    measure("xla_flags", "radjax", bench_xla_flags, args)
  if "variants" in parts:
    for kind in kinds:
      for batch, dtype in _points(args.variants_at):
        for variant in filter(None, args.variants.split(";")):
          measure("train_step", f"radjax ({variant}) {kind} {batch} {dtype}", bench_radjax_step,
                  kind, batch, dtype, args, variant)
  print()
  print(table())


if __name__ == "__main__":
  main()
