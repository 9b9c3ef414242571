"""Orbax checkpoints in `workdir/checkpoints`, one per epoch (the checkpoint step is the epoch).

Each checkpoint holds three items: `model` (params + batch_stats, all that inference needs),
`train` (optimizer state and step, for resuming) and `meta` (JSON: the config, class names,
preprocessing, library versions, the epoch's metrics). The latest `keep` checkpoints and the best
by validation AUC (ties: lower validation loss) are kept. Orbax writes each one to a temporary
directory and renames it when complete, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import math
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from radjax.errors import UserError

LIBRARIES = ("radjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow", "numpy")
PREPROCESSING_FIELDS = ("image_size", "resize", "resize_method", "value_range", "dicom_voi")


def _versions() -> dict[str, str]:
  found = {}
  for name in LIBRARIES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = "not installed"
  return found


def rank(metrics: dict[str, float]) -> tuple[float, float]:
  """Higher is better: val AUC first, then lower val loss. NaN AUC (one class) ranks lowest."""
  auc = metrics.get("val_auc", float("nan"))
  loss = metrics.get("val_loss", float("inf"))
  return (-math.inf if math.isnan(auc) else auc, -loss)


def manager(workdir, keep: int) -> ocp.CheckpointManager:
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep),
      ocp.checkpoint_managers.BestN(get_metric_fn=rank, reverse=False, n=1,
                                    keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=False)
  directory = (pathlib.Path(workdir) / "checkpoints").absolute()
  return ocp.CheckpointManager(directory, options=options, item_names=("model", "train", "meta"))


def metadata(config, class_names, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
  return {"config": config.to_dict(), "class_names": list(class_names),
          "preprocessing": {k: config[k] for k in PREPROCESSING_FIELDS},
          "versions": _versions(), "epoch": epoch, "metrics": metrics}


def _items(state) -> tuple[dict, dict]:
  """The `model` and `train` items of a TrainState."""
  return ({"params": state.params, "batch_stats": state.batch_stats},
          {"opt_state": state.opt_state, "step": state.step})


def save(mngr: ocp.CheckpointManager, epoch: int, state, meta: dict[str, Any]) -> None:
  model, train = _items(state)
  mngr.save(epoch, args=ocp.args.Composite(
      model=ocp.args.StandardSave(model), train=ocp.args.StandardSave(train),
      meta=ocp.args.JsonSave(meta)), metrics=meta["metrics"])
  mngr.wait_until_finished()


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_state(mngr: ocp.CheckpointManager, epoch: int, state):
  """Restores `state` (its structure and shardings serve as the target) and the metadata."""
  model, train = _items(state)
  restored = mngr.restore(epoch, args=ocp.args.Composite(
      model=ocp.args.StandardRestore(_abstract(model)),
      train=ocp.args.StandardRestore(_abstract(train)), meta=ocp.args.JsonRestore()))
  state = state.replace(params=restored.model["params"], batch_stats=restored.model["batch_stats"],
                        opt_state=restored.train["opt_state"], step=restored.train["step"])
  return state, restored.meta


def read_meta(mngr: ocp.CheckpointManager, epoch: int) -> dict[str, Any]:
  return mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def choose(mngr: ocp.CheckpointManager, which: str = "best") -> int:
  """The epoch of the checkpoint named by `which`: "best", "latest" or an epoch number."""
  epochs = list(mngr.all_steps())
  if not epochs:
    raise UserError(f"{mngr.directory}: no checkpoints (train first: radjax train --workdir ...)")
  if which == "latest":
    return max(epochs)
  if which == "best":
    return max(epochs, key=lambda e: (rank(read_meta(mngr, e)["metrics"]), e))
  if which.isdigit() and int(which) in epochs:
    return int(which)
  raise UserError(f"checkpoint {which!r}: expected best, latest or one of epochs {sorted(epochs)}")


def load_for_inference(workdir, which: str = "best"):
  """(model variables as numpy, metadata, epoch) of a training run's checkpoint."""
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise UserError(f"{workdir}: no checkpoints folder; is this a radjax training workdir?")
  with manager(workdir, keep=1_000_000) as mngr:  # a reader never deletes anything
    epoch = choose(mngr, which)
    meta = read_meta(mngr, epoch)
    restored = mngr.restore(epoch, args=ocp.args.Composite(model=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored.model), meta, epoch
