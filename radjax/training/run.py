"""A run's pieces built from a config: model, optimizer, initial state and sharded steps.

`build(config)` is what the training loop, the benchmark and the tests use; `load(workdir)` gives
a trained run's checkpoint for `evaluate`, `predict` and notebooks. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

import radjax
from radjax.models import Classifier, lowering
from radjax.models.stages import frozen_stages, stage_of
from radjax.training import losses, mixing, steps as steps_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# What "auto" means per backend, chosen by measurement (docs/results.md): XLA's CPU backend
# differentiates window-slice max pooling and BatchNorm's closed-form gradient faster than
# reduce_window and autodiff, and its own convolutions faster than the GEMM lowering, which is
# faster than its YNNPACK convolutions (radjax.CPU_XLA_FLAGS turns those off); on GPUs, cuDNN
# convolutions win. BatchNorm's one-pass statistics stay off until measured faster.
IMPLEMENTATIONS = {
    "cpu": {"conv_impl": "xla" if radjax.cpu_convolutions_without_ynnpack() else "gemm",
            "pool_impl": "window", "bn_grad": "closed_form", "bn_stats": "two_pass"},
    "gpu": {"conv_impl": "xla", "pool_impl": "xla", "bn_grad": "closed_form",
            "bn_stats": "two_pass"},
}
OTHER_BACKENDS = "gpu"  # TPUs and the rest: XLA's own ops, as on GPUs


# Precise BN's images per forward pass for `precise_bn_images_per_call=0`, measured on
# hello_world: on 2 CPU cores, passes of 7 batches took 9.1 s an epoch against 8.5 s one batch at a
# time (the same hour); on an H200, 0.024-0.036 s against 0.12-0.14 s (docs/results.md).
PRECISE_BN_IMAGES_PER_CALL = {"cpu": 1, "gpu": 64}  # 1: a single batch, whatever its size


def enable_compilation_cache(directory: str) -> None:
  """JAX' persistent compilation cache in `directory` ("" = leave JAX' setting): a second
  process (a second `radjax predict`, a resumed run) loads the compiled programs instead of
  compiling InceptionV3 again."""
  if directory:
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(directory).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def precise_bn_batches_per_call(config, backend: str | None = None) -> int:
  """Whole batches per precise-BN forward pass (`precise_bn_images_per_call`, 0 = per backend)."""
  images = config.precise_bn_images_per_call or PRECISE_BN_IMAGES_PER_CALL.get(
      backend or jax.default_backend(), PRECISE_BN_IMAGES_PER_CALL[OTHER_BACKENDS])
  return max(1, images // config.batch_size)


def implementations(config, backend: str | None = None) -> dict[str, str]:
  """conv_impl, pool_impl, bn_grad and bn_stats with "auto" resolved for `backend` (default:
  JAX's)."""
  backend = backend or jax.default_backend()
  chosen = IMPLEMENTATIONS.get(backend, IMPLEMENTATIONS[OTHER_BACKENDS])
  return {key: chosen[key] if config[key] == "auto" else config[key] for key in chosen}


def create_model(config, num_outputs: int = 1, backend: str | None = None) -> Classifier:
  """The classifier: `num_outputs` 1 = the binary sigmoid logit, N = N softmax logits; its
  implementations are those of `backend` (default: JAX's)."""
  impl = implementations(config, backend)
  return Classifier(hidden_units=config.hidden_units, dropout_rate=config.dropout_rate,
                    num_outputs=num_outputs,
                    dtype=DTYPES[config.dtype], bn_momentum=config.bn_momentum,
                    frozen_stages=frozen_stages(config.fine_tune),
                    bn_closed_form_grad=impl["bn_grad"] == "closed_form",
                    bn_one_pass=impl["bn_stats"] == "one_pass",
                    **lowering(impl["conv_impl"], impl["pool_impl"]))


def trainable_labels(params, fine_tune: str):
  """'train' / 'freeze' for every parameter leaf, per the fine-tuning setting."""
  n = frozen_stages(fine_tune)

  def label(path, _):
    keys = [k.key for k in path]
    frozen = keys[0] == "backbone" and stage_of(keys[1]) < n
    return "freeze" if frozen else "train"

  return jax.tree_util.tree_map_with_path(label, params)


# Settings that cannot reach the optimizer or a jitted step: they act on the host (which data,
# how it is read, sampled and batched, checkpoints, logging) or only on array shapes, which jit
# keys on by itself. Runs share their steps (`_steps_for`) when everything else is equal, and the
# step builders see the config without these, so a builder that starts reading one fails at once.
# A setting not listed here, a new one included, is part of the key: forgetting to list one costs
# a compile, never a stale step.
HOST_SETTINGS = ("data_dir", "image_size", "resize", "resize_method", "dicom_voi", "crop_borders",
                 "task", "weights", "class_weight", "sampling", "augment_on", "batch_size",
                 "eval_batch_size", "num_epochs", "seed", "precise_bn", "precise_bn_cache_mb",
                 "precise_bn_images_per_call", "cache_mb", "shuffle_buffer", "keep_checkpoints",
                 "distributed", "compilation_cache")


def step_settings(config) -> ml_collections.FrozenConfigDict:
  """What the optimizer, the loss, batch mixing and the steps' input preparation may read: the
  config less HOST_SETTINGS."""
  values = config.to_dict()
  for name in HOST_SETTINGS:
    values.pop(name, None)
  return ml_collections.FrozenConfigDict(values)


def make_optimizer(config, params) -> optax.GradientTransformation:
  adam = optax.adam(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
  if config.fine_tune == "all":
    return adam
  # Frozen parameters get exactly zero updates (and no Adam state worth the name).
  return optax.multi_transform({"train": adam, "freeze": optax.set_to_zero()},
                               trainable_labels(params, config.fine_tune))


def initial_variables(config, model):
  """Fresh variables with the configured pretrained backbone; also returns the load report."""
  from radjax.models import weights

  size = config.image_size
  variables = _jitted_init(model)(jax.random.key(config.seed), jnp.zeros((1, size, size, 3)),
                                  train=False)
  return weights.load_into_classifier(variables, config.weights)


@functools.lru_cache(maxsize=4)
def _jitted_init(model):
  """`model.init`, jitted once per model: equal models (flax modules compare by their fields)
  share it and its trace."""
  return jax.jit(model.init, static_argnames="train")


def prepare(config):
  """batch -> model input inside the jitted steps: float batches pass through; cached integer
  pixels (`augment_on="device"`) are augmented and scaled there (radjax.data.device_augment)."""
  from radjax.data import device_augment

  return functools.partial(device_augment.model_input, augment=config.augment,
                           value_range=config.value_range)


@dataclasses.dataclass
class Run:
  """Everything the loop needs besides data. `state` is replicated over the mesh."""
  config: Any
  model: Classifier
  tx: optax.GradientTransformation
  steps: steps_lib.Steps
  state: steps_lib.TrainState
  weights_report: Any
  task: str = "binary"


def build(config, devices=None, class_names=("0", "1"), where: str = "the data",
          multilabel: bool = False) -> Run:
  """Model (its task from `config.task` and the classes, or labels when `multilabel`, of the data
  named by `where`), optimizer, initial state (pretrained backbone per `config.weights`) and the
  jitted steps on a mesh over `devices` (default: all; their backend picks the implementations)."""
  from radjax.training import task as task_lib

  task = task_lib.resolve(config.task, class_names, where, multilabel)
  backend = devices[0].platform if devices else None
  model = create_model(config, task_lib.num_outputs(task, class_names), backend)
  variables, report = initial_variables(config, model)
  tx, steps, create_state = _steps_for(config, model, devices, variables["params"])
  return Run(config, model, tx, steps, create_state(variables), report, task)


# The optimizer and jitted steps of the last few (model, devices, step settings).
# A second run with the same ones (cross-validation folds, `evaluate` after `train` in one
# notebook, the tests) reuses their traces and compiled programs instead of tracing InceptionV3
# again, seconds each. The functions are pure: sharing them cannot leak one run into another.
_STEPS_KEPT = 4
_steps: collections.OrderedDict = collections.OrderedDict()


def clear_steps_cache() -> None:
  """Forgets the shared steps and initialisers: the next `build` traces and compiles afresh, as
  a new process does (benchmarks that report compile times call this first)."""
  _steps.clear()
  _jitted_init.cache_clear()


def _steps_for(config, model, devices, params=None):
  """(tx, Steps, jitted create_state) for these settings; `params` None: inference only."""
  devices = tuple(devices) if devices else tuple(jax.devices())
  settings = step_settings(config)
  key = (model, devices, params is None, settings.to_json_best_effort(sort_keys=True))
  if key in _steps:
    _steps.move_to_end(key)
    return _steps[key]
  if params is None:  # inference: no optimizer, and no loss to resolve (it may be a researcher's)
    tx, loss, mix = None, losses.cross_entropy, None
  else:
    tx = make_optimizer(settings, params)
    loss = functools.partial(losses.resolve(settings.loss), config=settings)
    mix = mixing.from_config(settings)
  steps = steps_lib.Steps(model, tx, steps_lib.make_mesh(list(devices)), prepare(settings),
                          loss, mix)
  # Jitted: one compiled function instead of an eager op (and a compile) per optimizer leaf.
  create_state = None if tx is None else jax.jit(
      functools.partial(steps_lib.create_state, tx=tx), out_shardings=steps.replicated)
  _steps[key] = tx, steps, create_state
  while len(_steps) > _STEPS_KEPT:
    _steps.popitem(last=False)
  return _steps[key]


@dataclasses.dataclass
class Trained:
  """A trained run's checkpoint, ready for inference."""
  config: Any
  class_names: list[str]
  meta: dict[str, Any]
  epoch: int
  model: Classifier
  steps: steps_lib.Steps
  variables: Any  # replicated
  task: str = "binary"


def load(workdir, which: str = "best") -> Trained:
  """The checkpoint `which` ("best", "latest" or an epoch) of the run in `workdir`."""
  from radjax.training import checkpoints, config as config_lib, task as task_lib

  variables, meta, epoch = checkpoints.load_for_inference(workdir, which)
  config = config_lib.config_from_dict(meta["config"])
  enable_compilation_cache(config.compilation_cache)  # the run's own, as training used
  where = f"{workdir} (checkpoint of epoch {epoch})"
  # Checkpoints written before tasks existed are binary: they hold two classes.
  stored = meta.get("task", config.task)
  task = task_lib.resolve(stored, meta["class_names"], where, stored == "multilabel")
  model = create_model(config, task_lib.num_outputs(task, meta["class_names"]))
  _, steps, _ = _steps_for(config, model, None)
  return Trained(config, list(meta["class_names"]), meta, epoch, model, steps,
                 steps.replicate(variables), task)
