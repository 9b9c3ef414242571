#!/usr/bin/env python
"""What a benchmark ran on: Python, the versions of radjax' dependencies (or MISSING), JAX's
devices and, where there is one, the NVIDIA GPU and driver. Used by scripts/gpu_figures.sh."""

import importlib
import platform
import shutil
import subprocess

MODULES = ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "ml_collections", "tqdm",
           "sklearn", "scipy", "matplotlib", "torch", "torchvision", "tensorflow", "pydicom",
           "PIL", "h5py")


def main() -> None:
  print("python", platform.python_version())
  for name in MODULES:
    try:
      module = importlib.import_module(name)
      print(name, getattr(module, "__version__", "present"))
    except Exception as e:  # a missing or broken package is reported, not fatal
      print(name, "MISSING", type(e).__name__)
  import jax
  print("devices", jax.devices())
  if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
  main()
