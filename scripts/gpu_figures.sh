#!/usr/bin/env bash
# The GPU figures of README "Benchmarks" (issue #12), in one call on a CUDA machine that may have
# no TensorFlow, no pydicom and no network. Two steps:
#
#   1. Here, on a machine with TensorFlow and network access to the package index:
#        bash scripts/gpu_figures.sh prepare
#      writes .device/ (git-ignored): hello_world's 75 images decoded at 299x299 as
#      .device/hello299.npz (radjax export-arrays) and the pure-Python wheels radjax needs that a
#      bare CUDA image may lack.
#   2. On the GPU machine, from the repository root, with .device/ carried along:
#        bash scripts/gpu_figures.sh run OUT_DIR
#      installs the wheels without network, reports what is missing, then runs the benchmark:
#      train step at batch 5/64/256, float32 and bfloat16, cold compile and warm persistent cache,
#      peak memory, PyTorch peers, the profile, and two end-to-end hello_world epochs from the
#      arrays with device augmentation. JSON lines and the table go to OUT_DIR/benchmark.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=.device
WHEELS="ml_collections tqdm absl-py PyYAML"   # pure Python, or py3-none-any wheels exist

case "${1:-}" in
  prepare)
    mkdir -p "$DEVICE_DIR/wheels"
    python -m pip download --no-deps --only-binary=:all: --python-version 3 \
        --platform any -d "$DEVICE_DIR/wheels" $WHEELS 2>/dev/null || \
      python -m pip download --no-deps -d "$DEVICE_DIR/wheels" $WHEELS
    radjax export-arrays --config hello_world --out "$DEVICE_DIR/hello299.npz" \
        --config.data_dir="${RADJAX_DATA_DIR:-../shared/datasets/open_i_abd_vs_cxr}"
    du -sh "$DEVICE_DIR"
    ;;
  run)
    out="${2:?usage: gpu_figures.sh run OUT_DIR}"
    mkdir -p "$out"
    python -m pip install --no-index --no-deps "$DEVICE_DIR"/wheels/*.whl >/dev/null 2>&1 || true
    python -m pip install --no-deps --no-build-isolation -e . >/dev/null
    python - <<'EOF' | tee "$out/environment.txt"
import importlib, platform
print("python", platform.python_version())
for name in ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "tqdm", "sklearn",
             "scipy", "matplotlib", "torch", "torchvision", "tensorflow", "pydicom", "PIL", "h5py"):
  try:
    module = importlib.import_module(name)
    print(name, getattr(module, "__version__", "present"))
  except Exception as e:
    print(name, "MISSING", type(e).__name__)
import jax
print("devices", jax.devices())
EOF
    python scripts/benchmark.py --device both --peers torch --parts step,compile,e2e,profile \
        --arrays "$DEVICE_DIR/hello299.npz" --e2e-epochs 2 2>&1 | tee "$out/benchmark.txt"
    ;;
  *)
    echo "usage: bash scripts/gpu_figures.sh prepare | run OUT_DIR" >&2
    exit 2
    ;;
esac
