"""Training: state, the jitted step, precise BatchNorm, and the epoch loop.

`train_step(state, batch, rng) -> (state, metrics)` is pure and jitted once, with the state's
buffers donated. Batches are sharded along the `data` axis of a mesh over every device, so one CPU,
eight GPUs or several hosts differ only in configuration. Nothing here imports TensorFlow; the
loop gets its batches from `radjax.data`.
"""

from __future__ import annotations

import functools
import itertools
import json
import pathlib
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from radjax.errors import UserError
from radjax.models import BLOCKS, Classifier

# Parameter names of the backbone start with the stage they belong to: "stem_" or "mixedN_".
NUM_STAGES = 1 + len(BLOCKS)


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the message says what was kept."""


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


# ----------------------------------------------------------------------------------------------
# Model, fine-tuning and optimizer
# ----------------------------------------------------------------------------------------------

def frozen_stages(fine_tune: str) -> int:
  """How many leading backbone stages (stem, mixed0, ...) are frozen: "all" 0, "head" all,
  "from:mixedN" the stem and mixed0..mixed(N-1)."""
  if fine_tune == "all":
    return 0
  if fine_tune == "head":
    return NUM_STAGES
  if fine_tune.startswith("from:mixed"):
    n = fine_tune.removeprefix("from:mixed")
    if n.isdigit() and int(n) < len(BLOCKS):
      return 1 + int(n)
  raise UserError(f"fine_tune={fine_tune!r}: expected 'all', 'head' or 'from:mixedN' "
                  f"with N in 0..{len(BLOCKS) - 1}")


def stage_of(unit: str) -> int:
  """Stage index of a backbone unit name: stem_* -> 0, mixedN_* -> N + 1."""
  head = unit.split("_")[0]
  return 0 if head == "stem" else 1 + int(head.removeprefix("mixed"))


def create_model(config) -> Classifier:
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(config.dtype)
  if dtype is None:
    raise UserError(f"dtype={config.dtype!r}: expected 'float32' or 'bfloat16'")
  conv_impl = config.conv_impl
  if conv_impl == "auto":
    conv_impl = "gemm" if jax.default_backend() == "cpu" else "xla"
  if conv_impl not in ("xla", "gemm"):
    raise UserError(f"conv_impl={config.conv_impl!r}: expected 'auto', 'xla' or 'gemm'")
  return Classifier(hidden_units=config.hidden_units, dropout_rate=config.dropout_rate,
                    dtype=dtype, bn_momentum=config.bn_momentum,
                    frozen_stages=frozen_stages(config.fine_tune), conv_impl=conv_impl)


def trainable_labels(params, fine_tune: str):
  """'train' / 'freeze' for every parameter leaf, per the fine-tuning setting."""
  n = frozen_stages(fine_tune)

  def label(path, _):
    keys = [k.key for k in path]
    frozen = keys[0] == "backbone" and stage_of(keys[1]) < n
    return "freeze" if frozen else "train"

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config, params) -> optax.GradientTransformation:
  adam = optax.adam(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
  if config.fine_tune == "all":
    return adam
  # Frozen parameters get exactly zero updates (and no Adam state worth the name).
  return optax.multi_transform({"train": adam, "freeze": optax.set_to_zero()},
                               trainable_labels(params, config.fine_tune))


def initial_variables(config, model, image_size: int):
  """Fresh variables with the configured pretrained backbone; also returns the load report."""
  from radjax import weights

  variables = jax.jit(model.init, static_argnames="train")(
      jax.random.key(config.seed), jnp.zeros((1, image_size, image_size, 3)), train=False)
  return weights.load_into_classifier(variables, config.weights)


def create_state(variables, tx) -> TrainState:
  return TrainState(step=jnp.zeros([], jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------

def train_step(state: TrainState, batch, rng, *, model: nn.Module, tx) -> tuple[TrainState, dict]:
  """One Adam step on binary cross-entropy. Dropout randomness: fold_in(rng, step)."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                  batch["image"], train=True, rngs={"dropout": dropout_rng},
                                  mutable=["batch_stats"])
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["label"].astype(logits.dtype)).mean()
    return loss, (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
  accuracy = jnp.mean((logits > 0) == (batch["label"] > 0))
  return state, {"loss": loss, "accuracy": accuracy}


def predict_logits(variables, images, *, model: nn.Module):
  """Inference-mode logits (BatchNorm running averages, no dropout)."""
  return model.apply(variables, images, train=False)


def batch_moments(variables, images, rng, *, model: nn.Module):
  """Per-BatchNorm (mean, E[x^2]) of one batch in training mode: a model clone with momentum 0
  stores the batch statistics themselves in place of running averages."""
  _, updates = model.clone(bn_momentum=0.0).apply(
      variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
  return _second_moments(updates["batch_stats"])


class Steps:
  """The jitted, sharded functions of one run. Compiled once per input shape."""

  def __init__(self, model: Classifier, tx, mesh: Mesh):
    """`tx` may be None when only inference (`logits`) is used."""
    self.mesh = mesh
    self.frozen_stages = model.frozen_stages
    self.replicated = NamedSharding(mesh, P())
    self.data = NamedSharding(mesh, P("data"))
    self.train = jax.jit(functools.partial(train_step, model=model, tx=tx),
                         in_shardings=(self.replicated, self.data, self.replicated),
                         out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    self.logits = jax.jit(functools.partial(predict_logits, model=model),
                          in_shardings=(self.replicated, self.data), out_shardings=self.replicated)
    self.moments = jax.jit(functools.partial(batch_moments, model=model),
                           in_shardings=(self.replicated, self.data, self.replicated),
                           out_shardings=self.replicated)

  def shard(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Global host batch -> global arrays split along the `data` mesh axis.

    Every process builds the same global batch (same seed, same files) and hands over its rows.
    """
    n, i = jax.process_count(), jax.process_index()

    def local(v):
      rows = len(v) // n
      return jax.make_array_from_process_local_data(self.data, v[i * rows:(i + 1) * rows])

    return {k: local(v) for k, v in batch.items()}

  def replicate(self, tree):
    return jax.device_put(tree, self.replicated)


def make_mesh() -> Mesh:
  # Auto axes: XLA propagates the batch sharding through the model (Explicit axes would make
  # every op's sharding part of its type, which flax' Dropout does not handle).
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def precise_batch_stats(steps: Steps, state: TrainState, batches, rng) -> Any:
  """BatchNorm statistics recomputed over `batches` (the un-augmented training set, full batches).

  Each layer's mean is the average of its batch means, its variance the average of E[x^2] minus
  the squared mean: exactly the statistics of all images at once when the layer's input does not
  depend on the batching, and the training-mode statistics the network really saw otherwise.
  Layers in inference mode (frozen) keep their statistics.
  """
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  total, count = None, 0
  for batch in batches:
    moments = steps.moments(variables, steps.shard({"image": batch["image"]})["image"], rng)
    total = moments if total is None else jax.tree.map(jnp.add, total, moments)
    count += 1
  if count == 0:
    raise UserError("precise BatchNorm needs at least one full training batch")
  precise = _from_second_moments(jax.tree.map(lambda s: s / count, total))
  # Frozen layers ran in inference mode: keep their statistics bit for bit.
  frozen = steps.frozen_stages
  return jax.tree_util.tree_map_with_path(
      lambda path, new, old: old if path[0].key == "backbone" and stage_of(path[1].key) < frozen
      else new, precise, state.batch_stats)


def _second_moments(stats):
  """{"mean", "var"} per layer -> {"mean", "var" := E[x^2]}."""
  return jax.tree.map(lambda d: {"mean": d["mean"], "var": d["var"] + jnp.square(d["mean"])},
                      stats, is_leaf=lambda d: isinstance(d, dict) and "mean" in d)


def _from_second_moments(stats):
  return jax.tree.map(lambda d: {"mean": d["mean"], "var": d["var"] - jnp.square(d["mean"])},
                      stats, is_leaf=lambda d: isinstance(d, dict) and "mean" in d)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def enable_compilation_cache(directory: str) -> None:
  """JAX' persistent compilation cache: a second process skips most of the compile time."""
  if directory:
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(directory).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def read_history(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_history(workdir: pathlib.Path, history: list[dict]) -> None:
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def evaluate_split(steps: Steps, variables, pipeline, split: str, batch_size: int):
  """(logits, labels) of every image of `split`, each exactly once (padding masked out)."""
  logits, labels = [], []
  for batch in pipeline.eval_batches(split, batch_size):
    out = steps.logits(variables, steps.shard({"image": batch["image"]})["image"])
    logits.append(np.asarray(out)[batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  return np.concatenate(logits), np.concatenate(labels)


def _full_batches(batches):
  return (b for b in batches if b["mask"].all())


def train_and_evaluate(config, workdir) -> list[dict]:
  """Trains per `config` in `workdir`, resuming from its latest checkpoint; returns the history."""
  from tqdm import tqdm

  from radjax import checkpoints, data, evaluate

  if config.distributed:
    jax.distributed.initialize()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  enable_compilation_cache(config.compilation_cache)
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % jax.device_count():
      raise UserError(f"{name}={config[name]} is not divisible by the {jax.device_count()} devices")

  folders = data.list_folders(data.resolve_data_dir(config.data_dir), dicom_voi=config.dicom_voi)
  pipeline = data.Pipeline(folders, config)
  steps_per_epoch = pipeline.steps_per_epoch(config.batch_size)
  if steps_per_epoch == 0:
    raise UserError(f"batch_size={config.batch_size} exceeds the {pipeline.num_examples('train')} "
                    "training images")
  print(f"Data: {folders.root}  classes {folders.class_names}  counts {folders.counts()}")

  model = create_model(config)
  variables, report = initial_variables(config, model, config.image_size)
  print(report)
  tx = make_optimizer(config, variables["params"])
  steps = Steps(model, tx, make_mesh())
  state = steps.replicate(create_state(variables, tx))

  mngr = checkpoints.manager(workdir, config.keep_checkpoints)
  history, start = read_history(workdir), 1
  latest = mngr.latest_step()
  if latest is not None:
    state, meta = checkpoints.restore_state(mngr, latest, state)
    if meta["class_names"] != folders.class_names:
      raise UserError(f"{workdir}: checkpoint classes {meta['class_names']} differ from the data's "
                      f"{folders.class_names}")
    history, start = [h for h in history if h["epoch"] <= latest], latest + 1
    print(f"Resuming from the checkpoint of epoch {latest} in {mngr.directory}")

  rng = jax.random.fold_in(jax.random.key(config.seed), 1)  # 0 went to the initialisation
  image_shape = (config.batch_size, config.image_size, config.image_size, 3)
  example = {"image": jax.ShapeDtypeStruct(image_shape, jnp.float32, sharding=steps.data),
             "label": jax.ShapeDtypeStruct(image_shape[:1], jnp.int32, sharding=steps.data)}
  started = time.perf_counter()
  train_step_compiled = steps.train.lower(state, example, rng).compile()
  print(f"Compiled the train step in {time.perf_counter() - started:.1f} s "
        f"({jax.device_count()} x {jax.devices()[0].device_kind})")

  writer = data.tensorflow().summary.create_file_writer(str(workdir / "tensorboard"))
  train_batches = pipeline.train_batches(config.batch_size, start, config.num_epochs)
  for epoch in range(start, config.num_epochs + 1):
    started, fetched = time.perf_counter(), []
    batches = tqdm(itertools.islice(train_batches, steps_per_epoch), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{config.num_epochs}", unit="step", leave=False)
    for batch in batches:
      state, metrics = train_step_compiled(state, steps.shard(batch), rng)
      if fetched:  # keep one step queued, so the bar's rate is the device's, not dispatch speed
        jax.block_until_ready(fetched[-1])
      fetched.append(metrics)
    fetched = jax.device_get(fetched)  # the one host sync of the epoch
    train_seconds = time.perf_counter() - started
    loss = float(np.mean([m["loss"] for m in fetched]))
    if not np.isfinite(loss):
      kept = f"epoch {epoch - 1}" if epoch > 1 else "none"  # every finished epoch was saved
      raise TrainingError(f"training loss became {loss} in epoch {epoch}; stopped without saving. "
                          f"Last good checkpoint: {kept} in {mngr.directory}.")
    if config.precise_bn:
      state = state.replace(batch_stats=precise_batch_stats(
          steps, state, _full_batches(pipeline.eval_batches("train", config.batch_size)), rng))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    val = evaluate.binary_metrics(*evaluate_split(steps, variables, pipeline, "val",
                                                  config.eval_batch_size))
    record = {"epoch": epoch, "loss": loss,
              "accuracy": float(np.mean([m["accuracy"] for m in fetched])),
              "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_auc": val["auc"],
              "images_per_s": steps_per_epoch * config.batch_size / train_seconds,
              "epoch_seconds": time.perf_counter() - started}
    history.append(record)
    _write_history(workdir, history)  # before the checkpoint: a resume drops later lines
    checkpoints.save(mngr, epoch, state,
                     checkpoints.metadata(config, folders.class_names, epoch, record))
    with writer.as_default(step=epoch):
      for key, value in record.items():
        data.tensorflow().summary.scalar(key, value)
    evaluate.plot_curves(history, workdir / "curves.png")
    print(f"epoch {epoch:>3}/{config.num_epochs}  loss {record['loss']:.4f}  "
          f"acc {record['accuracy']:.3f}  |  val loss {record['val_loss']:.4f}  "
          f"acc {record['val_accuracy']:.3f}  AUC {record['val_auc']:.3f}  |  "
          f"{record['images_per_s']:.1f} img/s  {record['epoch_seconds']:.0f} s", flush=True)
  writer.close()
  mngr.close()
  return history
