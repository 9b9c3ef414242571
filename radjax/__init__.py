"""radjax: pure-JAX medical image classification (Lakhani et al., J Digit Imaging 2018, and beyond)."""

import os as _os

__version__ = "0.1.0"

# XLA's command buffers (CUDA graphs) cover fusions and library calls by default but not cuDNN
# convolutions, so an InceptionV3 step launches its ~300 convolution kernels one by one: on an
# H200 the batch-5 step took 10.8 ms with them in graphs against 19.2 ms without (docs/results.md,
# "GPU"). XLA reads XLA_FLAGS when JAX starts its backend, so this must run before that;
# a command-buffer setting of the user's own wins. Other backends ignore the flag.
GPU_XLA_FLAGS = "--xla_gpu_enable_command_buffer=+CONVOLUTION"

# XLA's CPU backend hands convolutions to YNNPACK fusions by default (jaxlib 0.10 and 0.11); for
# InceptionV3's train step that is the slow path: on a 2-core AMD EPYC the hello_world batch-5 step
# took 3.0 s with lax.conv in YNNPACK, 1.95 s with radjax' GEMM lowering, and 1.6 s with lax.conv
# and no YNNPACK fusions (docs/results.md, "Train step on CPU"). With this flag set, the CPU's
# conv_impl "auto" is lax.conv (radjax.training.run); a YNNPACK setting of the user's own wins,
# and "auto" then stays the GEMM lowering.
CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="


def xla_flags_with_defaults(flags: str, jaxlib: tuple[int, int]) -> str:
  """The user's XLA_FLAGS `flags` with radjax' defaults added where the user set none of their
  own and that jaxlib's XLA knows them (an XLA that does not know a flag aborts at start-up)."""
  if jaxlib < (0, 10):
    return flags
  if "xla_gpu_enable_command_buffer" not in flags:  # "+CONVOLUTION" parses from 0.10.2 on
    flags = f"{flags} {GPU_XLA_FLAGS}"
  if "xla_cpu_experimental_ynn_fusion_type" not in flags and jaxlib < (0, 12):
    flags = f"{flags} {CPU_XLA_FLAGS}"  # the flag as XLA knows it in jaxlib 0.10 and 0.11
  return flags.strip()


def _default_xla_flags() -> None:
  _os.environ["XLA_FLAGS"] = xla_flags_with_defaults(_os.environ.get("XLA_FLAGS", ""),
                                                     _jaxlib_version())


def _jaxlib_version() -> tuple[int, int]:
  """(major, minor) of the installed jaxlib; (0, 0) when it cannot be read."""
  from importlib import metadata

  try:
    major, minor = (int(part) for part in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return (0, 0)
  return (major, minor)


def cpu_convolutions_without_ynnpack() -> bool:
  """Whether this process' XLA runs CPU convolutions itself (CPU_XLA_FLAGS in XLA_FLAGS, set by
  radjax or by the user), which makes lax.conv the faster CPU lowering."""
  return CPU_XLA_FLAGS in _os.environ.get("XLA_FLAGS", "").split()


_default_xla_flags()
