"""The training loop: train an epoch -> recalibrate BatchNorm -> validate -> report -> save.

Resumes from the newest intact checkpoint in the workdir. The pieces live elsewhere: the run
(model, optimizer, state, jitted steps, loss) in `run`, `steps` and `losses`, data in
`radjax.data`, numbers in `radjax.metrics`, what is written per epoch in `report`, checkpoints in
`checkpoints`. Nothing here imports TensorFlow directly. A loop of your own on the same pieces:
examples/custom_loop.py.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import time

import jax
import numpy as np

from radjax.data import datasets, listing
from radjax.metrics import classification as metrics
from radjax.training import checkpoints, config as config_lib
from radjax.training import report, run as run_lib, workdir as workdir_lib
from radjax.errors import UserError

# Stream of the run's randomness (dropout, recalibration): stream 0 went to the initialisation.
TRAIN_STREAM = 1


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the message says what was kept."""


def train_and_evaluate(config, workdir) -> list[dict]:
  """Trains per `config` in `workdir`, resuming from its latest intact checkpoint; returns the
  history (metrics.jsonl's records). Only one training run may use a workdir at a time.

  Several processes (hosts): every process calls this after `jax.distributed.initialize()` (or
  with `config.distributed`, which calls it). Each prepares and augments only its share of every
  training batch; the first process holds the workdir's lock and writes the reports and the
  console output for all of them; Orbax writes the checkpoints together.
  """
  if config.distributed:
    config_lib.initialize_distributed()  # already done by load_config, unless built in code
  workdir = workdir_lib.prepare(workdir)
  if jax.process_index() != 0:  # one run, one lock, one report: the first process's
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
      return _train(config, workdir)
  with workdir_lib.lock(workdir):
    return _train(config, workdir)


def _train(config, workdir: pathlib.Path) -> list[dict]:
  run_lib.enable_compilation_cache(config.compilation_cache)
  data_dir = listing.resolve_data_dir(config.data_dir).resolve()
  pipeline = datasets.open_pipeline(data_dir, config)
  steps_per_epoch = pipeline.steps_per_epoch(config.batch_size)
  if steps_per_epoch == 0:
    raise UserError(f"--config.batch_size={config.batch_size}: exceeds the "
                    f"{pipeline.num_examples('train')} training images")
  print(f"Data: {data_dir}  " + (f"labels {pipeline.class_names}  positives {pipeline.counts()}"
                                  if pipeline.multilabel else
                                  f"classes {pipeline.class_names}  counts {pipeline.counts()}"))
  if config.sampling == "balanced":
    print(f"Sampling: balanced, each of the {len(pipeline.class_names)} classes fills an equal "
          f"share of every epoch's {steps_per_epoch * config.batch_size} draws")

  run = run_lib.build(config, class_names=pipeline.class_names, where=str(data_dir),
                      multilabel=pipeline.multilabel)
  n = len(pipeline.class_names)
  print(f"Task: {run.task} " + {
      "binary": f"({n} classes, one sigmoid logit)",
      "multiclass": f"({n} classes, softmax over their logits)",
      "multilabel": f"({n} labels, a sigmoid logit each; unknown labels masked)"}[run.task])
  print(describe_objective(config))
  mngr = checkpoints.manager(workdir, config.keep_checkpoints)
  state, start, changes = run.state, 1, {}
  try:
    resumed = checkpoints.restore_for_resume(mngr, state, workdir)
  except UserError:  # a head of another shape: say so when the task is what differs
    _check_task(mngr, run.task, workdir)
    raise
  if resumed is not None:
    state, meta, latest = resumed
    _refuse_other_task(meta.get("task", "binary"), run.task, workdir)  # older runs: binary
    changes = _check_resume(meta, config, data_dir, pipeline.class_names, workdir)
    start = latest + 1
    print(f"Resuming from the checkpoint of epoch {latest} in {mngr.directory} (its weights, "
          "not the configured initial ones)")
  else:
    print(run.weights_report)  # only a fresh run starts from them
  reporter = report.Reporter(workdir, config.num_epochs, last_kept=start - 1,
                             write=jax.process_index() == 0)
  if changes:
    reporter.event({"epoch": start - 1, "event": "resumed with changed settings",
                    "changes": changes})
  if start > config.num_epochs:
    print(f"Nothing to do: {workdir} is already trained to epoch {start - 1} "
          f"(--config.num_epochs={config.num_epochs}).")
    mngr.close()
    return report.epoch_records(reporter.history)

  # Each process reads and prepares only its share of every batch (all of it with one process).
  shard = (jax.process_index(), jax.process_count())
  recalibration = recalibration_batches(run, pipeline, shard)
  rng = jax.random.fold_in(jax.random.key(config.seed), TRAIN_STREAM)
  batches = pipeline.train_batches(config.batch_size, start, config.num_epochs, shard=shard)
  first = next(batches)  # its shapes and dtypes are the compiled step's
  train_step = _compile_train_step(run, state, first, rng)
  batches = itertools.chain([first], batches)
  for epoch in range(start, config.num_epochs + 1):
    started = time.perf_counter()
    state, train_metrics = _train_epoch(run, train_step, state, batches, rng, epoch,
                                        steps_per_epoch)
    train_seconds = time.perf_counter() - started
    if not np.isfinite(train_metrics["loss"]):
      kept = f"epoch {epoch - 1}" if epoch > 1 else "none"  # every finished epoch was saved
      raise TrainingError(f"training loss became {train_metrics['loss']} in epoch {epoch}; "
                          f"stopped without saving. Last good checkpoint: {kept} in "
                          f"{mngr.directory}.")
    if recalibration:
      placed = recalibration() if callable(recalibration) else recalibration
      state = state.replace(batch_stats=run.steps.precise_batch_stats(
          state, placed, rng, run_lib.precise_bn_batches_per_call(config)))
      jax.block_until_ready(state.batch_stats)  # so that its time is its own, not validation's
    recalibrated = time.perf_counter()
    val_logits, val_labels = run.steps.logits_of(
        state.variables, pipeline.eval_batches("val", config.eval_batch_size, shard),
        process_local=True)
    val = metrics.classification_metrics(val_logits, val_labels)
    validated = time.perf_counter()
    record = {"epoch": epoch, **train_metrics,
              "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_auc": val["auc"],
              "images_per_s": steps_per_epoch * config.batch_size / train_seconds,
              "train_seconds": train_seconds,
              "precise_bn_seconds": recalibrated - started - train_seconds,
              "val_seconds": validated - recalibrated,
              "epoch_seconds": time.perf_counter() - started}
    reporter.epoch(record)  # metrics.jsonl first: a resume drops lines after its checkpoint
    checkpoints.save(mngr, epoch, state, checkpoints.metadata(config, pipeline.class_names, epoch,
                                                              record, str(data_dir), run.task))
  reporter.close()
  mngr.close()
  _final_summary(config.num_epochs, val_logits, val_labels, pipeline.class_names, config.seed)
  return report.epoch_records(reporter.history)


def describe_objective(config) -> str:
  """What the training figures are: the loss and any batch mixing; validation's are plain."""
  from radjax.training import mixing

  loss = config.loss + (f" (gamma {config.focal_gamma})" if config.loss == "focal" else "")
  if config.label_smoothing:
    loss += f", label smoothing {config.label_smoothing}"
  line = f"Loss: {loss}; validation loss is the plain cross-entropy."
  mixed = mixing.describe(config)
  return line + (f"\n{mixed}" if mixed else "")


def recalibration_batches(run, pipeline, shard=(0, 1)):
  """Precise BN's batches (this process's rows of each). They are the same in every epoch: placed
  on the devices once when they fit in `precise_bn_cache_mb`, else read again each epoch (a
  callable gives them). [] when it is off, or when no BatchNorm layer trains (fine_tune="head":
  every one keeps its statistics, so the pass would change nothing)."""
  from radjax.models.stages import frozen_stages, NUM_STAGES

  config = run.config
  if not config.precise_bn:
    return []
  if frozen_stages(config.fine_tune) == NUM_STAGES:
    print("Precise BN: skipped, no BatchNorm layer trains (fine_tune=head)")
    return []
  placed, size = [], 0
  for batch in pipeline.recalibration_batches(config.batch_size, shard):
    size += batch["image"].nbytes
    if size > config.precise_bn_cache_mb * 2**20 / shard[1]:  # every process holds its share
      print(f"Precise BN: its batches exceed --config.precise_bn_cache_mb="
            f"{config.precise_bn_cache_mb}; they are read again each epoch")
      return lambda: (run.steps.on_device(b, process_local=True)
                      for b in pipeline.recalibration_batches(config.batch_size, shard))
    placed.append(run.steps.on_device(batch, process_local=True))
  return placed


def _final_summary(epoch: int, logits, labels, class_names, seed: int) -> None:
  """The last epoch's validation figures with their bootstrap intervals: how much 10 images say."""
  from radjax.metrics.summary import format_macro, format_per_class, format_summary

  if np.ndim(logits) == 2:  # multiclass, or multilabel ((n, K) labels)
    multilabel = np.ndim(labels) == 2
    values = metrics.classification_metrics(logits, labels)
    decision = "each label at probability 0.5" if multilabel else "the most probable class"
    intervals = (metrics.multilabel_bootstrap_intervals if multilabel
                 else metrics.multiclass_bootstrap_intervals)(logits, labels, seed=seed)
    macro = "  " + format_macro(values, intervals,
                                {} if multilabel else metrics.exact_intervals(values)) + "\n"
    print(f"Validation at epoch {epoch} ({len(labels)} images, {decision}): "
          f"accuracy {values['accuracy']:.3f}{' (of the known labels)' if multilabel else ''}  "
          f"macro AUC {values['auc']:.3f}\n" + macro + format_per_class(values, class_names)
          + "\n  (`radjax evaluate` for the best checkpoint"
          + (")" if multilabel else " and its confusion matrix)"))
    return
  values = metrics.binary_metrics(logits, labels)
  intervals = metrics.bootstrap_intervals(logits, labels, seed=seed)
  print(f"Validation at epoch {epoch} ({len(labels)} images, probability 0.5):\n  "
        + format_summary(values, intervals, class_names, metrics.exact_intervals(values))
        + "\n  (95% stratified bootstrap intervals; `radjax evaluate` for the best checkpoint, "
        "its calibration and operating point)")


def _compile_train_step(run, state, batch, rng):
  """Compiles the step for the global batch of which `batch` is this process's rows."""
  example = {k: jax.ShapeDtypeStruct((len(v) * jax.process_count(), *v.shape[1:]), v.dtype,
                                     sharding=run.steps.data) for k, v in batch.items()}
  started = time.perf_counter()
  compiled = run.steps.compile_train(state, example, rng)
  print(f"Compiled the train step in {time.perf_counter() - started:.1f} s "
        f"({jax.device_count()} x {jax.devices()[0].device_kind})")
  return compiled


def _train_epoch(run, train_step, state, batches, rng, epoch: int, steps_per_epoch: int):
  """`steps_per_epoch` steps from `batches`; returns the state and the epoch's mean metrics."""
  from tqdm import tqdm

  fetched = []
  bar = tqdm(itertools.islice(batches, steps_per_epoch), total=steps_per_epoch,
             desc=f"epoch {epoch}/{run.config.num_epochs}", unit="step", leave=False,
             # None: a bar on a terminal only; a log file gets the one validation line per epoch,
             # not a carriage-return frame per step.
             disable=True if jax.process_index() != 0 else None)
  for batch in bar:
    state, step_metrics = train_step(state, run.steps.shard(batch, process_local=True), rng)
    if fetched:  # keep one step queued, so the bar's rate is the device's, not dispatch speed
      jax.block_until_ready(fetched[-1])
    fetched.append(step_metrics)
  fetched = jax.device_get(fetched)  # the one host sync of the epoch
  return state, {key: float(np.mean([m[key] for m in fetched])) for key in ("loss", "accuracy")}


def _check_task(mngr, task: str, workdir) -> None:
  """After a restore that did not fit the model: refuses in the task's words when the newest
  checkpoint is of another task (its head has another shape)."""
  latest = mngr.latest_step()
  if latest is None:
    return
  try:
    stored = checkpoints.read_meta(mngr, latest).get("task", "binary")  # older runs: binary
  except Exception:  # noqa: BLE001 - unreadable: the restore's own error stands
    return
  _refuse_other_task(stored, task, workdir)


def _refuse_other_task(stored: str, task: str, workdir) -> None:
  """A run resumes only as its own resolved task (`config.task` may change between "auto" and
  what auto gives). Multiclass and multilabel heads of N logits have one shape: the restore
  succeeds, and this refuses."""
  if stored != task:
    raise UserError(f"{workdir}: cannot resume a {stored} run as {task} (--config.task and the "
                    "classes decide the task): resume with the run's settings, or train in a new "
                    "--workdir.")


def _check_resume(meta: dict, config, data_dir: pathlib.Path, class_names, workdir) -> dict:
  """Refuses a resume whose settings change what the weights mean or which data they see;
  returns the other changes (reported and recorded by the caller)."""
  forbidden, allowed = config_lib.resume_changes(meta["config"], config)
  stored_dir = meta.get("data_dir")  # absent in checkpoints written before it was stored
  if stored_dir and pathlib.Path(stored_dir) != data_dir:
    forbidden["data_dir"] = [stored_dir, str(data_dir)]
  if meta["class_names"] != class_names:
    forbidden["classes"] = [meta["class_names"], class_names]
  if forbidden:
    listed = "; ".join(f"{k} {old} -> {new}" for k, (old, new) in forbidden.items())
    raise UserError(f"{workdir}: cannot resume with changed {listed} (the checkpoint's value "
                    "first): they change what the weights mean or which data they see. Resume "
                    "with the checkpoint's values, or train in a new --workdir.")
  if meta.get("optimizer_reset"):
    allowed["optimizer_state"] = ["restored", "re-initialised (its structure follows fine_tune)"]
  if allowed:
    listed = "; ".join(f"{k} {old} -> {new}" for k, (old, new) in allowed.items())
    print(f"Resuming with changed settings: {listed}. Recorded in metrics.jsonl; this run is "
          "not what an uninterrupted run would have been.")
  return allowed
