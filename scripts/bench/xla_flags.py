"""Which flag of ONEDNN_RECIPE makes the CPU step faster: the step under each XLA_FLAGS setting of
XLA_FLAG_SETTINGS alone, exactly as written (radjax' own defaults left out), each in a process of
its own, with what its compiled program hands to YNNPACK and oneDNN: a time and the program
change that explains it.
"""

from __future__ import annotations

import json

from bench import children
from bench.onednn import ONEDNN_RECIPE
from bench.records import emit
from bench.step import bench_radjax_step, points

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


def xla_flags_child(conv_impl: str, args) -> None:
  """In a process whose XLA_FLAGS the parent chose: the CPU step at --variants-at, and what its
  compiled program hands to libraries."""
  for batch, dtype in points(args.variants_at):
    compiled = bench_radjax_step("cpu", batch, dtype, args, f"conv_impl={conv_impl}")
    print(json.dumps({"part": "hlo_library_calls", **hlo_library_calls(compiled.as_text())}),
          flush=True)


def bench_xla_flags(args) -> None:
  """The CPU train step under each of XLA_FLAG_SETTINGS, each in a fresh process."""
  for conv_impl, flags in XLA_FLAG_SETTINGS:
    child, records = children.run(["--xla-flags-child", conv_impl, *children.step_args(args)],
                                  env={"XLA_FLAGS": flags})
    for step, calls in zip(records[::2], records[1::2]):
      calls.pop("part")
      emit(**{**step, "xla_flags": flags}, **calls, study="xla_flags")
    if child.returncode != 0:
      emit(part="xla_flags", impl="radjax", xla_flags=flags, conv_impl=conv_impl,
           skipped=children.failure(child))
