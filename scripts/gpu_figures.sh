#!/usr/bin/env bash
# The GPU figures of docs/results.md ("GPU"), in one call on a CUDA machine that may have
# no TensorFlow, no pydicom and no network. Two steps:
#
#   1. Here, on a machine with TensorFlow and network access to the package index:
#        bash scripts/gpu_figures.sh prepare
#      writes .device/ (git-ignored): hello_world's 75 images decoded at 299x299 as
#      .device/hello299.npz (radjax export-arrays) and the pure-Python wheels radjax needs that a
#      bare CUDA image may lack.
#   2. On the GPU machine, from the repository root, with .device/ carried along:
#        bash scripts/gpu_figures.sh run OUT_DIR
#      installs the wheels it lacks without network, reports versions, then runs the benchmark:
#      train step at batch 5/64/256, float32 and bfloat16, with peak memory and PyTorch peers;
#      three end-to-end hello_world epochs from the arrays with device augmentation; cold and
#      warm-cache compile; profiles; implementation variants; the CPU step if time is left.
#      JSON lines go to OUT_DIR/benchmark.jsonl, the table to OUT_DIR/table.md.
#      GPU_FIGURES_BUDGET (seconds, default 500) bounds the run: no measurement starts in its last
#      minute, and whatever finished is kept.
#        bash scripts/gpu_figures.sh tune OUT_DIR
#      the tuning run instead (default budget 470 s): first radjax as shipped beside PyTorch eager
#      and torch.compile at batch 5 float32 and 256 bfloat16, with the hello_world epoch end to
#      end on the GPU and on this machine's CPU (`--device both`); then what is still unmeasured
#      (the batch-256 profile by kernel name, BatchNorm's and max-pool's variants).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=.device
WHEELS="ml_collections tqdm absl-py PyYAML"   # pure Python, or py3-none-any wheels exist

# Installs what this Python lacks from .device/wheels and radjax itself, without network.
setup() {
  export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
  # JAX takes device memory as it needs it: its peak figure is then its own, and PyTorch fits.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  site=/tmp/radjax-site
  mkdir -p "$site"
  for wheel in "$DEVICE_DIR"/wheels/*.whl; do   # only what this Python lacks
    module=$(basename "$wheel" | cut -d- -f1 | sed 's/^absl_py$/absl/; s/^[Pp]y[Yy][Aa][Mm][Ll]$/yaml/')
    python -c "import $module" 2>/dev/null || \
      python -m pip install -q --no-index --no-deps --target "$site" "$wheel"
  done
  # radjax itself, from this checkout (its configs/ become radjax.configs only when installed).
  python -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target "$site" .
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  python scripts/environment.py | tee "$1/environment.txt"
}

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
    began=$SECONDS
    budget="${GPU_FIGURES_BUDGET:-500}"
    left() { echo $(( budget - (SECONDS - began) )); }
    setup "$out"
    bench=(python scripts/benchmark.py --jsonl "$out/benchmark.jsonl")
    # The GPU: train step at 5/64/256 x float32/bfloat16 with PyTorch peers, the end-to-end
    # hello_world epochs from the arrays, compile cold and warm, profiles, implementation variants.
    timeout "$(left)" "${bench[@]}" --device gpu --peers torch \
        --parts step,e2e,compile,profile,variants --arrays "$DEVICE_DIR/hello299.npz" \
        --profile-at 5:float32,256:bfloat16 --variants-at 5:float32,256:bfloat16 \
        --variants "input=uint8;bn_grad=autodiff;pool_impl=window" --deadline $(( $(left) - 60 )) \
        2>&1 | tee "$out/gpu.txt" || true
    # The same code's CPU step on this machine, for GPU/CPU ratios, if time is left.
    if [ "$(left)" -gt 90 ]; then
      timeout "$(left)" "${bench[@]}" --device cpu --batch-sizes 5 --dtypes float32 --peers none \
          --parts step 2>&1 | tee "$out/cpu.txt" || true
    fi
    python scripts/benchmark.py --table "$out/benchmark.jsonl" | tee "$out/table.md"
    ;;
  tune)
    # Where the GPU step stands against its targets. Each command is its own process (XLA reads
    # XLA_FLAGS once). GPU_FIGURES_BUDGET (default 470 s) bounds the whole; rehearse on a CPU with
    # GPU_FIGURES_DEVICE=cpu GPU_FIGURES_PAIR=cpu GPU_FIGURES_ARGS="--image-size 75 ...".
    out="${2:?usage: gpu_figures.sh tune OUT_DIR}"
    mkdir -p "$out"
    began=$SECONDS
    budget="${GPU_FIGURES_BUDGET:-470}"
    left() { echo $(( budget - (SECONDS - began) )); }
    measure() {  # measure LOG ARGS...: the benchmark, if a minute is left, within what is left
      local log="$1" seconds
      shift
      seconds=$(left)
      if [ "$seconds" -le 60 ]; then echo "not started, budget spent: $*" | tee -a "$out/$log"; return; fi
      timeout "$seconds" python scripts/benchmark.py --jsonl "$out/benchmark.jsonl" \
          --device "${GPU_FIGURES_DEVICE:-gpu}" --peers none --deadline $(( seconds - 60 )) \
          "$@" ${GPU_FIGURES_ARGS:-} 2>&1 | tee -a "$out/$log" || true
    }
    setup "$out"
    # radjax as shipped (convolutions in CUDA graphs, precise BN in few passes) beside PyTorch
    # eager and compiled, at batch 5 float32 and 256 bfloat16; then hello_world end to end on the
    # GPU and on the CPU, and the CPU's batch-5 step: the GPU/CPU table.
    measure shipped.txt --device "${GPU_FIGURES_PAIR:-both}" --parts step,e2e --peers torch \
        --torch-compile "${GPU_FIGURES_TORCH_COMPILE:-default,reduce-overhead}" \
        --step-at 5:float32,256:bfloat16 --arrays "$DEVICE_DIR/hello299.npz"
    # What is still unmeasured: the batch-256 profile; BatchNorm's statistics in one pass, its
    # autodiff gradient and the window max pool on the GPU.
    measure unmeasured.txt --parts profile,variants --profile-at 256:bfloat16 \
        --variants-at 256:bfloat16,5:float32 \
        --variants "bn_stats=one_pass;bn_grad=autodiff;pool_impl=window"
    python scripts/benchmark.py --table "$out/benchmark.jsonl" | tee "$out/table.md"
    ;;
  *)
    echo "usage: bash scripts/gpu_figures.sh prepare | run OUT_DIR | tune OUT_DIR" >&2
    exit 2
    ;;
esac
