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
import sys
import time
import pathlib

# The measurements live in scripts/bench/, beside this script (one module each: bench/__init__.py
# lists them); this folder is on sys.path when the script runs, not when it is loaded by path.
HERE = str(pathlib.Path(__file__).resolve().parent)
if HERE not in sys.path:
  sys.path.insert(0, HERE)

from bench import (DATASET, children, compile_cache, epoch, onednn, peers_keras,  # noqa: E402
                   peers_torch, pipeline, predict, profile, records, step, tables, xla_flags)
from bench.records import emit  # noqa: E402

DEFAULT_BATCHES = {"cpu": "5,32", "gpu": "5,64,256"}


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
  if children.serve(args):  # a child process of a part: its work only
    return
  if args.table:
    for name in args.table:
      if not os.path.exists(name):
        sys.exit(f"benchmark: {name}: no such file (no measurement finished?)")
      records.RESULTS.extend(records.tagged(
          name, [json.loads(line) for line in open(name) if line.startswith("{")]))
    print(tables.table())
    return
  if args.jsonl:
    records.open_jsonl(args.jsonl)

  import radjax  # its XLA defaults, before JAX starts its backend
  import jax

  began = time.perf_counter()
  emit(part="machine", **records.machine(), commit=records.commit(), jax=jax.__version__,
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
      points = step.points(args.cpu_step_at)
    elif args.step_at:
      points = step.points(args.step_at)
    else:
      points = [(int(b), d) for b in (args.batch_sizes or DEFAULT_BATCHES[kind]).split(",")
                for d in args.dtypes.split(",")]
    if "step" in parts:
      for batch in dict.fromkeys(b for b, _ in points):  # in order, once each
        for dtype in (d for b, d in points if b == batch):
          measure("train_step", f"radjax {kind} {batch} {dtype}", step.bench_radjax_step, kind,
                  batch, dtype, args)
        if "keras" in peers and kind == "cpu":
          measure("train_step", "keras", peers_keras.bench_keras_step, batch, args)
        # With --device both the CPU runs radjax alone: the comparison is radjax on two devices,
        # and compiling PyTorch for the CPU too would spend the GPU machine's time (--device cpu
        # measures it).
        if "torch" in peers and not (kind == "cpu" and args.device == "both"):
          for dtype in (d for b, d in points if b == batch):
            mode = peers_torch.TORCH_MODES[dtype]
            measure("train_step", f"torch-{mode}", peers_torch.bench_torch_step, kind, batch, mode,
                    args)
            for compile_mode in filter(None, args.torch_compile.split(",")):
              measure("train_step", f"torch-compile-{mode} ({compile_mode})",
                      peers_torch.bench_torch_step, kind, batch, mode, args, compile_mode)
  if "e2e" in parts:
    for kind in kinds:
      if kind == jax.default_backend():
        measure("end_to_end", f"radjax {kind}", epoch.bench_end_to_end, args)
      else:
        measure("end_to_end", f"radjax {kind}", epoch.bench_end_to_end_elsewhere, kind, args)
  if "pipeline" in parts:
    measure("pipeline", "radjax", pipeline.bench_pipeline, args)
  if "predict" in parts:
    measure("predict_cli", "radjax", predict.bench_predict_cli, args)
  if "compile" in parts:
    for kind in kinds:
      measure("compile_cache", f"radjax {kind}", compile_cache.bench_compile_cache, kind, args)
  if "profile" in parts:
    for kind in kinds:
      for batch, dtype in step.points(args.profile_at):
        measure("profile", f"radjax {kind} {batch} {dtype}", profile.profile_radjax_step, kind,
                batch, dtype, args)
  if "onednn" in parts:
    measure("onednn", "radjax", onednn.bench_onednn, args)
  if "xla_flags" in parts:
    measure("xla_flags", "radjax", xla_flags.bench_xla_flags, args)
  if "variants" in parts:
    for kind in kinds:
      for batch, dtype in step.points(args.variants_at):
        for variant in filter(None, args.variants.split(";")):
          measure("train_step", f"radjax ({variant}) {kind} {batch} {dtype}",
                  step.bench_radjax_step, kind, batch, dtype, args, variant)
  print()
  print(tables.table())


if __name__ == "__main__":
  main()
