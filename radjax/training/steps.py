"""The jitted, sharded functions of a run: the train step, inference logits, precise BatchNorm.

`train_step(state, batch, rng) -> (state, metrics)` is pure and jitted once, with the state's
buffers donated. Batches are sharded along the `data` axis of a mesh over every device, so one CPU,
eight GPUs or several hosts differ only in configuration. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from radjax.errors import UserError
from radjax.training import losses


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict[str, Any]:
    """What inference needs."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def create_state(variables, tx) -> TrainState:
  return TrainState(step=jnp.zeros([], jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))


def images_of(batch):
  """A batch's model input when the host prepared it (the default `prepare`)."""
  return batch["image"]


# fold_in word of the mixing key (drawn from the step's dropout key).
MIX_STREAM = 1


def step_keys(rng, step):
  """A step's (dropout, mixing) keys: fold_in(rng, step) and a key folded from it, so every step
  draws new ones and a resumed run draws those the uninterrupted run would have."""
  dropout = jax.random.fold_in(rng, step)
  return dropout, jax.random.fold_in(dropout, MIX_STREAM)


def train_step(state: TrainState, batch, rng, *, model: nn.Module, tx, prepare=images_of,
               loss=losses.cross_entropy, mix=None) -> tuple[TrainState, dict]:
  """One optimizer step on the batch mean of `loss(logits, labels)`, one value per example
  (radjax.training.losses; the paper's binary cross-entropy by default), each weighted by its
  class weight when the batch has one (Keras' class_weight: the weighted sum over the batch
  size). `prepare(batch)` gives the model input (with `augment_on="device"` it augments cached
  pixels); `mix(images, key)` (radjax.training.mixing) pairs each image with another of the batch,
  and its loss and accuracy are then lam * own + (1 - lam) * partner's."""
  dropout_rng, mix_rng = step_keys(rng, state.step)
  images, labels, weights = prepare(batch), batch["label"], batch.get("weight")
  mixed = None if mix is None else mix(images, mix_rng)
  if mixed is not None:
    images = mixed.images

  def mixed_value(value_of):  # value_of(labels, weights): per example, or a batch figure
    value = value_of(labels, weights)
    if mixed is None:
      return value
    partner = mixed.permutation
    return mixed.lam * value + (1 - mixed.lam) * value_of(
        labels[partner], None if weights is None else weights[partner])

  def loss_fn(params):
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                  images, train=True, rngs={"dropout": dropout_rng},
                                  mutable=["batch_stats"])
    per_example = mixed_value(lambda y, w: loss(logits, y) if w is None else loss(logits, y) * w)
    return per_example.mean(), (logits, updates["batch_stats"])

  (value, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
  return state, {"loss": value, "accuracy": mixed_value(lambda y, _: accuracy(logits, y))}


def predicted_class(logits):
  """The decision at probability 0.5 (a logit of exactly 0 is the first class, as everywhere in
  radjax), or the most probable of N classes (the first of ties)."""
  if logits.ndim == 1:
    return (logits > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def accuracy(logits, labels):
  """The share of right decisions; multilabel: of the known labels, each at probability 0.5."""
  if labels.ndim == 2:
    known = labels >= 0
    right = (logits > 0) == (labels == 1)
    return jnp.sum(right & known) / jnp.maximum(jnp.sum(known), 1)
  return jnp.mean(predicted_class(logits) == labels)


def predict_logits(variables, images, *, model: nn.Module):
  """Inference-mode logits (BatchNorm running averages, no dropout)."""
  return model.apply(variables, images, train=False)


def batch_moments(variables, images, rng, *, model: nn.Module):
  """Each training-mode BatchNorm's batch (mean, biased variance), as the layers sow them.
  Frozen layers run in inference mode and sow nothing."""
  _, state = model.apply(variables, images, train=True, rngs={"dropout": rng},
                         mutable=["batch_stats", "moments"])
  return state.get("moments", {}).get("backbone", {})


def stacked_batch_moments(variables, batches, rng, *, model: nn.Module, prepare=images_of):
  """`batch_moments` of several batches in one forward pass: each batch keeps its own statistics
  (vmap), but the device runs one pass over all their images instead of one per batch (on a GPU,
  a batch-5 pass is bound by its kernel launches, not its arithmetic). Moments stacked on axis 0."""
  if len(batches) == 1:  # vmap over one batch measured 14% slower on CPU than the plain pass
    return jax.tree.map(lambda x: x[None],
                        batch_moments(variables, prepare(batches[0]), rng, model=model))
  images = jnp.stack([prepare(b) for b in batches])
  return jax.vmap(lambda x: batch_moments(variables, x, rng, model=model))(images)


def return_freed_memory() -> None:
  """Hands the heap memory freed so far back to the system (glibc's `malloc_trim`). XLA's CPU
  compiler frees ~0.6 GiB after compiling InceptionV3's train step, but glibc keeps freed blocks
  in its per-thread arenas, so they would sit under the step's own 1.2 GiB of activations. No-op
  where the C library has no such call (macOS, musl)."""
  try:
    ctypes.CDLL(None).malloc_trim(0)
  except (OSError, AttributeError):
    pass


def make_mesh(devices=None) -> Mesh:
  # Auto axes: XLA propagates the batch sharding through the model (Explicit axes would make
  # every op's sharding part of its type, which flax' Dropout does not handle).
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


class Steps:
  """The jitted, sharded functions of one run. Compiled once per input shape."""

  def __init__(self, model: nn.Module, tx, mesh: Mesh, prepare=images_of,
               loss=losses.cross_entropy, mix=None):
    """`tx` may be None when only inference (`logits`) is used. `prepare(batch)` -> model input:
    batches are dicts with "image" (and "transform" for device augmentation). `loss` and `mix`:
    see `train_step`."""
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, P())
    self.data = NamedSharding(mesh, P("data"))
    self.train = jax.jit(functools.partial(train_step, model=model, tx=tx, prepare=prepare,
                                           loss=loss, mix=mix),
                         in_shardings=(self.replicated, self.data, self.replicated),
                         out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    self.logits = jax.jit(lambda variables, batch: predict_logits(variables, prepare(batch),
                                                                  model=model),
                          in_shardings=(self.replicated, self.data), out_shardings=self.replicated)
    self.moments = jax.jit(functools.partial(stacked_batch_moments, model=model, prepare=prepare),
                           in_shardings=(self.replicated, self.data, self.replicated),
                           out_shardings=self.replicated)
    self.pool = jax.jit(pooled_batch_stats, static_argnums=2, out_shardings=self.replicated)
    # Every process's rows of a sharded batch, on every process (evaluation's labels and masks).
    self.gathered = jax.jit(lambda tree: tree, out_shardings=self.replicated)

  def compile_train(self, state, batch, rng):
    """The train step compiled for `batch`'s shapes (arrays or `jax.ShapeDtypeStruct`s), before
    its first run. The compiler's scratch memory is returned to the system first: the first
    step's peak is then the step's own buffers, not those plus the compiler's leftovers."""
    compiled = self.train.lower(state, batch, rng).compile()
    return_freed_memory()
    return compiled

  def shard(self, batch: dict[str, np.ndarray], process_local: bool = False) -> dict[str, jax.Array]:
    """Host batch -> global arrays split along the `data` mesh axis.

    `process_local`: the batch is this process's rows of the global batch (training: each
    process augments only its share). Otherwise every process holds the same global batch (same
    seed, same files; evaluation) and hands over its rows.
    """
    n, i = jax.process_count(), jax.process_index()

    def local(v):
      if process_local:
        return jax.make_array_from_process_local_data(self.data, v)
      rows = len(v) // n
      return jax.make_array_from_process_local_data(self.data, v[i * rows:(i + 1) * rows])

    return {k: local(v) for k, v in batch.items()}

  def on_device(self, batch: dict, process_local: bool = False) -> dict[str, jax.Array]:
    """A batch's images as sharded device arrays (already placed ones are kept as they are).
    `process_local`: as in `shard`."""
    image = batch["image"]
    return {"image": image} if isinstance(image, jax.Array) \
        else self.shard({"image": image}, process_local)

  def replicate(self, tree):
    return jax.device_put(tree, self.replicated)

  def logits_of(self, variables, batches: Iterable[dict], process_local: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of every real example of padded `batches` (see preprocess.pad_batch).

    `process_local`: each process holds its own examples of every global batch
    (`eval_batches(..., shard=...)`); their labels, masks and indices travel with the images and
    come back to every process, and the examples are put back in `index` order, so the result is
    the one-process result whatever the number of processes."""
    logits, kept = [], []
    gather = process_local and jax.process_count() > 1
    for batch in batches:
      rest = {k: batch[k] for k in ("label", "mask", "index") if k in batch}
      if gather:
        placed = self.shard({"image": batch["image"], **rest}, process_local=True)
        out = self.logits(variables, {"image": placed.pop("image")})
        rest = jax.device_get(self.gathered(placed))
      else:
        out = self.logits(variables, self.shard({"image": batch["image"]}))
      logits.append(np.asarray(out)[rest["mask"]])
      kept.append({k: v[rest["mask"]] for k, v in rest.items()})
    logits = np.concatenate(logits)
    labels = np.concatenate([k["label"] for k in kept])
    if gather:
      order = np.argsort(np.concatenate([k["index"] for k in kept]), kind="stable")
      logits, labels = logits[order], labels[order]
    return logits, labels

  def precise_batch_stats(self, state: TrainState, batches: Iterable[dict], rng,
                          batches_per_call: int = 1) -> Any:
    """BatchNorm statistics recomputed over `batches` (full batches of the un-augmented training
    set, classes mixed: `Pipeline.recalibration_batches`), `batches_per_call` of them per forward
    pass (each still with its own statistics; the last call is padded with repeats of a batch whose
    moments are dropped, so every call has one compiled shape).

    Each layer's mean is the mean of its batch means, its variance the pooled one,
    mean(var_b) + var(mean_b): exactly the statistics of all images at once where a layer's input
    does not depend on the batching, and the training-mode statistics the network really saw
    elsewhere. Both are two-pass (no E[x^2] - mean^2, which loses digits in float32). Layers in
    inference mode (frozen) keep their statistics.
    """
    placed = [self.on_device(b) for b in batches]
    if not placed:
      raise UserError("precise BatchNorm needs at least one full training batch "
                      "(batch_size exceeds the training images)")
    calls = -(-len(placed) // max(1, batches_per_call))
    per_call = -(-len(placed) // calls)  # spread evenly: the least padding
    padded = placed + [placed[-1]] * (calls * per_call - len(placed))
    stacked = [self.moments(state.variables, tuple(padded[i:i + per_call]), rng)
               for i in range(0, len(padded), per_call)]
    return self.pool(stacked, state.batch_stats, len(placed))


def pooled_batch_stats(stacked: list, batch_stats, count: int):
  """The batch statistics with the moments of the first `count` batches in `stacked` (each call's
  moments, stacked on axis 0) pooled (see `Steps.precise_batch_stats`); jitted once, not ~300
  small eager ops."""
  stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs)[:count], *stacked)
  pooled = jax.tree.map(_pool_moments, stacked,
                        is_leaf=lambda x: isinstance(x, dict) and "mean_var" in x)
  return jax.tree_util.tree_map_with_path(lambda path, old: _pooled_or(pooled, path, old),
                                          batch_stats)


def _pool_moments(layer):
  means, variances = layer["mean_var"]
  mean = jnp.mean(means, axis=0)
  return {"mean": mean, "var": jnp.mean(variances, axis=0) + jnp.mean(jnp.square(means - mean), 0)}


def _pooled_or(pooled, path, old):
  """The pooled statistic at `path` (backbone/unit/bn/mean|var), else the old one (frozen)."""
  keys = [k.key for k in path]
  if keys[0] != "backbone" or keys[1] not in pooled:
    return old
  return pooled[keys[1]][keys[2]][keys[3]]
