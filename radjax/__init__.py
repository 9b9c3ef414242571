"""radjax: pure-JAX medical image classification (Lakhani et al., J Digit Imaging 2018, and beyond)."""

import os as _os

__version__ = "0.1.0"

# XLA's command buffers (CUDA graphs) cover fusions and library calls by default but not cuDNN
# convolutions, so an InceptionV3 step launches its ~300 convolution kernels one by one: on an
# H200 the batch-5 step took 10.8 ms with them in graphs against 19.2 ms without (docs/results.md,
# "GPU"). XLA reads XLA_FLAGS when JAX starts its backend, so this must run before that;
# a command-buffer setting of the user's own wins. Other backends ignore the flag.
GPU_XLA_FLAGS = "--xla_gpu_enable_command_buffer=+CONVOLUTION"


def _default_xla_flags() -> None:
  flags = _os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_enable_command_buffer" in flags or not _knows_convolution_commands():
    return
  _os.environ["XLA_FLAGS"] = f"{flags} {GPU_XLA_FLAGS}".strip()


def _knows_convolution_commands() -> bool:
  """Whether the installed jaxlib is one where "+CONVOLUTION" was seen to parse (0.10.2 on CPU,
  0.11.2 on an H200); an XLA that does not know a flag value aborts at start-up."""
  from importlib import metadata

  try:
    major, minor = (int(part) for part in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return False
  return (major, minor) >= (0, 10)


_default_xla_flags()
