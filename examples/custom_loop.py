"""A training loop of your own, on radjax' public pieces: the pipeline's batches, the jitted train
step, precise BatchNorm, masked evaluation, and a checkpoint that `radjax evaluate` and
`radjax predict` accept. radjax' own loop (radjax/training/loop.py) wraps the same calls in
resume, NaN checks, progress bars, reports and figures.

  python examples/custom_loop.py ../shared/datasets/open_i_abd_vs_cxr runs/own --config.num_epochs=2
  radjax evaluate --workdir runs/own

Settings are the smoke config's (75x75, random init) plus any --config.NAME=VALUE: about a
minute on 2 CPU cores. Accuracy at that size means little; the loop is the point.
"""

import itertools
import pathlib
import sys

import jax

from radjax.data import datasets
from radjax.metrics import classification
from radjax.training import checkpoints, config as config_lib, run as run_lib


def main(data_dir, workdir, *overrides) -> dict:
  config = config_lib.load_config("smoke", [f"--config.data_dir={data_dir}", *overrides])
  data_dir = pathlib.Path(data_dir).resolve()
  pipeline = datasets.open_pipeline(data_dir, config)
  run = run_lib.build(config, class_names=pipeline.class_names, multilabel=pipeline.multilabel)
  state, steps, rng = run.state, run.steps, jax.random.key(config.seed)
  steps_per_epoch = pipeline.steps_per_epoch(config.batch_size)
  # One iterator over every epoch's augmented batches; epochs count from 1 (a resume starts later).
  batches = pipeline.train_batches(config.batch_size, 1, config.num_epochs)
  # Precise BatchNorm's batches: the un-augmented training set, the same in every epoch.
  recalibration = [steps.on_device(b) for b in pipeline.recalibration_batches(config.batch_size)]
  manager = checkpoints.manager(workdir, config.keep_checkpoints)
  for epoch in range(1, config.num_epochs + 1):
    for batch in itertools.islice(batches, steps_per_epoch):
      state, step_metrics = steps.train(state, steps.shard(batch), rng)
    if config.precise_bn:
      state = state.replace(batch_stats=steps.precise_batch_stats(state, recalibration, rng))
    # Evaluation batches are padded to a full batch; logits_of keeps only real images (the mask).
    logits, labels = steps.logits_of(state.variables,
                                     pipeline.eval_batches("val", config.eval_batch_size))
    val = classification.classification_metrics(logits, labels)
    record = {"epoch": epoch, "loss": float(step_metrics["loss"]), "val_loss": val["loss"],
              "val_accuracy": val["accuracy"], "val_auc": val["auc"]}
    print(record)
    # The metadata (config, classes, task, preprocessing) is what evaluate and predict read; the
    # metrics pick the best checkpoint (validation AUC, then loss).
    checkpoints.save(manager, epoch, state, checkpoints.metadata(
        config, pipeline.class_names, epoch, record, str(data_dir), run.task))
  manager.close()
  return record


if __name__ == "__main__":
  main(*sys.argv[1:])
