"""Orbax checkpoints in `workdir/checkpoints`, one per epoch (the checkpoint step is the epoch).

Each checkpoint holds three items: `model` (params + batch_stats, all that inference needs),
`train` (optimizer state and step, for resuming) and `meta` (JSON: the config, class names,
preprocessing, library versions, the epoch's metrics). The latest `keep` checkpoints and the best
by validation AUC (ties: lower validation loss) are kept. Orbax writes each one to a temporary
directory and renames it when complete, so a killed run never leaves a half-written checkpoint.

A checkpoint is damaged when restoring it fails (a file deleted or truncated later, say). Readers
change nothing and name it and the intact ones in a UserError; `restore_for_resume` moves the
damaged ones newer than the one it resumes from to `workdir/damaged_checkpoints`.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from radjax.errors import UserError

LIBRARIES = ("radjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow", "numpy")
PREPROCESSING_FIELDS = ("image_size", "resize", "resize_method", "value_range", "dicom_voi")
INFERENCE_ITEMS = ("model", "meta")
ALL_ITEMS = ("model", "train", "meta")

log = logging.getLogger("radjax")


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


class _Manager(ocp.CheckpointManager):
  """Reads each checkpoint's metrics from its `meta` item.

  Orbax writes metrics to disk only when `best_fn` is set, so a fresh manager (a resumed run) would
  see none, and BestN would let LatestN delete the best checkpoint of the earlier run.
  """

  def metrics(self, step: int):
    try:
      meta = ocp.JsonCheckpointHandler().restore(self.directory / str(step) / "meta")
      return dict(meta["metrics"])
    except Exception:  # noqa: BLE001  unreadable: damaged; BestN then keeps it (see `manager`)
      return None


def manager(workdir, keep: int | None, *, create: bool = True) -> ocp.CheckpointManager:
  """The manager of `workdir/checkpoints`; `keep=None` keeps all, `create=False` creates nothing.

  Orbax deletes checkpoints only in `save`, after writing the new one; a run calls
  `restore_for_resume` before its first save, so damaged newer ones are moved away by then. One
  whose metrics cannot be read (a damaged `meta`) is never deleted (see BestN below).
  """
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep),
      ocp.checkpoint_managers.BestN(get_metric_fn=rank, reverse=False, n=1,
                                    keep_checkpoints_without_metrics=True),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=create,
                                         enable_async_checkpointing=False)
  directory = (pathlib.Path(workdir) / "checkpoints").absolute()
  return _Manager(directory, options=options, item_names=ALL_ITEMS)


def metadata(config, class_names, epoch: int, metrics: dict[str, float],
             data_dir: str = "", task: str = "binary") -> dict[str, Any]:
  """The `meta` item. `data_dir`: the absolute data directory trained on (evaluate's default)."""
  return {"config": config.to_dict(), "class_names": list(class_names), "task": task,
          "preprocessing": {k: config[k] for k in PREPROCESSING_FIELDS},
          "versions": _versions(), "epoch": epoch, "metrics": metrics, "data_dir": data_dir}


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
  """Restores `state` (its structure and shardings serve as the target) and the metadata.

  The model must fit exactly. The optimizer state may not: its structure follows `fine_tune`
  (frozen parameters get no Adam moments), which a researcher may change between stages. When
  the stored optimizer state is intact but of another structure, the step is restored and
  `state`'s fresh optimizer state kept; only then the metadata says "optimizer_reset": True.
  """
  model, train = _items(state)
  try:
    restored = mngr.restore(epoch, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(_abstract(model)),
        train=ocp.args.StandardRestore(_abstract(train)), meta=ocp.args.JsonRestore()))
    opt_state, step, reset = restored.train["opt_state"], restored.train["step"], False
  except Exception:
    restored = mngr.restore(epoch, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(_abstract(model)), meta=ocp.args.JsonRestore()))
    stored_train = _restore_items(mngr, epoch, ("train",)).train  # raises if damaged
    if jax.tree.structure(stored_train["opt_state"]) == jax.tree.structure(train["opt_state"]):
      raise  # same structure, yet it did not restore: not a fine-tuning change
    opt_state, reset = state.opt_state, True
    step = jax.device_put(np.asarray(stored_train["step"], np.int32), state.step.sharding)
  state = state.replace(params=restored.model["params"], batch_stats=restored.model["batch_stats"],
                        opt_state=opt_state, step=step)
  return state, ({**restored.meta, "optimizer_reset": True} if reset else restored.meta)


def read_meta(mngr: ocp.CheckpointManager, epoch: int) -> dict[str, Any]:
  return mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def _restore_items(mngr: ocp.CheckpointManager, epoch: int, items=ALL_ITEMS):
  """`items` of a checkpoint, restored as saved (no target: any model structure fits)."""
  makers = {"model": ocp.args.StandardRestore, "train": ocp.args.StandardRestore,
            "meta": ocp.args.JsonRestore}
  return mngr.restore(epoch, args=ocp.args.Composite(**{name: makers[name]() for name in items}))


def _reason(error: BaseException) -> str:
  """One line on why a restore failed: the innermost cause, without TensorStore's spec dump."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  text = (text.strip().splitlines() or [""])[0].split(" [tensorstore_spec")[0]
  text = text.split(" See full TensorStore details")[0].rstrip(":")
  if type(error) not in (ValueError, Exception) or not text:
    text = f"{type(error).__name__}: {text}".rstrip(": ")
  return text if len(text) <= 240 else text[:237] + "..."


def _failure(mngr: ocp.CheckpointManager, epoch: int, items) -> str | None:
  """Why restoring `items` of the checkpoint of `epoch` fails; None when it restores."""
  try:
    _restore_items(mngr, epoch, items)
  except Exception as error:  # noqa: BLE001  any failure to read it back is damage
    return _reason(error)
  return None


def _damaged(mngr: ocp.CheckpointManager, epoch: int, reason: str, items) -> UserError:
  intact = [e for e in sorted(mngr.all_steps()) if e != epoch and _failure(mngr, e, items) is None]
  listing = (f"epoch{'s' * (len(intact) > 1)} {', '.join(map(str, intact))} (use --checkpoint N)"
             if intact else "none (train again, in this or another --workdir)")
  return UserError(f"{mngr.directory / str(epoch)}: checkpoint of epoch {epoch} is damaged "
                   f"({reason}); intact checkpoints: {listing}")


def _select(mngr: ocp.CheckpointManager, which: str, items=INFERENCE_ITEMS):
  """(epoch, restored `items`) of the checkpoint named by `which`; a UserError if it is damaged."""
  epochs = sorted(mngr.all_steps())
  if not epochs:
    raise UserError(f"{mngr.directory}: no checkpoints (train first: radjax train --workdir ...)")
  if which == "latest":
    epoch = epochs[-1]
  elif which == "best":
    ranks = {}
    for e in epochs:  # every checkpoint must be ranked: one with unreadable metrics might be best
      try:
        ranks[e] = rank(read_meta(mngr, e)["metrics"])
      except Exception as error:  # noqa: BLE001
        raise _damaged(mngr, e, _reason(error), items) from error
    epoch = max(epochs, key=lambda e: (ranks[e], e))
  elif which.isdigit() and int(which) in epochs:
    epoch = int(which)
  else:
    raise UserError(f"checkpoint {which!r}: expected best, latest or one of epochs {epochs}")
  try:
    return epoch, _restore_items(mngr, epoch, items)
  except Exception as error:  # noqa: BLE001
    raise _damaged(mngr, epoch, _reason(error), items) from error


def choose(mngr: ocp.CheckpointManager, which: str = "best") -> int:
  """The epoch of the checkpoint named by `which`: "best", "latest" or an epoch number.

  Raises a UserError naming the intact checkpoints when that one's model or metadata is damaged.
  """
  return _select(mngr, which)[0]


def load_for_inference(workdir, which: str = "best"):
  """(model variables as numpy, metadata, epoch) of a training run's checkpoint."""
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise UserError(f"{workdir}: no checkpoints folder; is this a radjax training workdir?")
  # A reader keeps everything and creates nothing; it never saves, and Orbax deletes only in save.
  with manager(workdir, keep=None, create=False) as mngr:
    epoch, restored = _select(mngr, which)
  return jax.tree.map(np.asarray, restored.model), restored.meta, epoch


def meta_of(workdir, which: str = "best") -> dict:
  """A run's checkpoint's metadata alone (class names, task, config), without its arrays."""
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise UserError(f"{workdir}: no checkpoints folder; is this a radjax training workdir?")
  with manager(workdir, keep=None, create=False) as mngr:
    _, restored = _select(mngr, which, items=("meta",))
  return restored.meta


def task_of(workdir, which: str = "best") -> str:
  """The task ("binary", "multiclass", "multilabel") of a run's checkpoint."""
  return meta_of(workdir, which).get("task", "binary")  # written before tasks existed: binary


def _set_aside(src: pathlib.Path, workdir, epoch: int, reason: str) -> None:
  """Moves a damaged checkpoint to `workdir/damaged_checkpoints/<epoch>` (or `<epoch>.2`, ...)."""
  if jax.process_index() == 0:  # one mover on a shared file system
    folder = pathlib.Path(workdir).absolute() / "damaged_checkpoints"
    folder.mkdir(exist_ok=True)
    dest, n = folder / str(epoch), 1
    while dest.exists():
      n += 1
      dest = folder / f"{epoch}.{n}"
    shutil.move(src, dest)
    log.warning("%s: checkpoint of epoch %d is damaged (%s); moved it to %s", src, epoch, reason,
                dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"radjax: set aside damaged checkpoint {epoch}")


def restore_for_resume(mngr: ocp.CheckpointManager, state, workdir):
  """(state, metadata, epoch) of the newest intact checkpoint, as `restore_state`; None if none.

  Each damaged checkpoint newer than that one is moved to `workdir/damaged_checkpoints`, so that
  training can save its epoch again. A checkpoint that restores by itself but not into `state` (a
  different model) is not damaged: that is a UserError, and nothing is moved.
  """
  moved = False
  try:
    for epoch in sorted(mngr.all_steps(), reverse=True):
      try:
        return (*restore_state(mngr, epoch, state), epoch)
      except Exception as error:  # noqa: BLE001
        reason = _failure(mngr, epoch, ALL_ITEMS)
        if reason is None:
          raise UserError(f"{mngr.directory / str(epoch)}: checkpoint of epoch {epoch} does not "
                          f"fit the model being trained ({_reason(error)}); train with the config "
                          "it was made with, or use another --workdir") from error
        _set_aside(pathlib.Path(mngr.directory) / str(epoch), workdir, epoch, reason)
        moved = True
    return None
  finally:
    if moved:  # the manager's list of steps would still hold the moved ones
      mngr.reload()
