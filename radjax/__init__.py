"""radjax: pure-JAX medical image classification (Lakhani et al., J Digit Imaging 2018, and beyond)."""

import os as _os

__version__ = "0.1.0"

# XLA's command buffers (CUDA graphs) cover fusions and library calls by default but not cuDNN
# convolutions, so an InceptionV3 step launches its ~300 convolution kernels one by one: on an
# H200 the batch-5 step took 10.8 ms with them in graphs against 19.2 ms without (README
# "Benchmarks"). XLA reads XLA_FLAGS when JAX starts its backend, so this must run before that;
# a command-buffer setting of the user's own wins. Other backends ignore the flag.
GPU_XLA_FLAGS = "--xla_gpu_enable_command_buffer=+CONVOLUTION"


def _default_xla_flags() -> None:
  flags = _os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_enable_command_buffer" not in flags:
    _os.environ["XLA_FLAGS"] = f"{flags} {GPU_XLA_FLAGS}".strip()


_default_xla_flags()
