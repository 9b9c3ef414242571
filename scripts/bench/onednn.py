"""The CPU train step with XLA's oneDNN recipe: conv_impl xla and gemm, each without and with
ONEDNN_RECIPE (each setting in a process of its own), against Keras `train_on_batch` at the same
batches, which runs its convolutions through oneDNN. A faster step is only worth having if it is
the same step, so the recipe's first-step loss and gradients are compared with the default's,
and that difference with the one between radjax' two convolution lowerings.
"""

from __future__ import annotations

import os
import tempfile

from bench import children
from bench.peers_keras import bench_keras_step
from bench.records import emit
from bench.step import bench_radjax_step, points, random_batch, step_config


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


def first_step_numbers(run, data, key):
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


def onednn_child(out_dir: str, args) -> None:
  """In a process whose XLA_FLAGS the parent chose: the CPU train step at --variants-at with
  each conv_impl, and (float32 points) the first step's loss and gradients, saved to out_dir."""
  import jax
  import numpy as np

  from radjax.training import run as run_lib

  for conv_impl in ONEDNN_CONV_IMPLS:
    for batch, dtype in points(args.variants_at):
      bench_radjax_step("cpu", batch, dtype, args, f"conv_impl={conv_impl}")
      if dtype != "float32":
        continue
      config = step_config(batch, dtype, args, [f"--config.conv_impl={conv_impl}"])
      run = run_lib.build(config, jax.devices("cpu")[:1])
      loss, grads = first_step_numbers(run, random_batch(batch, args), jax.random.key(0))
      np.savez(os.path.join(out_dir, f"{conv_impl}-{batch}.npz"), loss=loss, grads=grads)


def bench_onednn(args) -> None:
  """The CPU train step with conv_impl xla and gemm, without and with ONEDNN_RECIPE (each in a
  fresh process), Keras at the same batches in this one; then whether the recipe keeps the first
  step's loss and gradients."""
  import numpy as np

  with tempfile.TemporaryDirectory() as scratch:
    for name, flags in (("default", ""), ("onednn", ONEDNN_RECIPE)):
      os.makedirs(os.path.join(scratch, name))
      child, records = children.run(
          ["--onednn-child", os.path.join(scratch, name), *children.step_args(args)],
          env={"XLA_FLAGS": flags})
      for record in records:
        emit(**record, onednn=name)
      if child.returncode != 0:
        emit(part="onednn", impl="radjax", onednn=name, skipped=children.failure(child))
    for batch in dict.fromkeys(b for b, _ in points(args.variants_at)):
      if "keras" in args.peers.split(","):
        bench_keras_step(batch, args)
    # Each conv_impl with the recipe against itself without; and, for scale, the two conv_impls
    # against each other without it (two float32 orders of summation of the same convolutions).
    pairs = [(c, ("default", c), ("onednn", c)) for c in ONEDNN_CONV_IMPLS]
    pairs.append(("xla vs gemm", ("default", "xla"), ("default", "gemm")))
    for batch in (b for b, dtype in points(args.variants_at) if dtype == "float32"):
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
