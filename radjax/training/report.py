"""What a training run reports after each epoch: `metrics.jsonl`, TensorBoard, `curves.png`, console.

The loop hands one record per epoch to `Reporter.epoch`; everything a run writes about its
progress lives here, so the loop reads as its phases. `metrics.jsonl` also holds events (a resume
with changed settings): lines with an "event" key instead of metrics.
"""

from __future__ import annotations

import json
import logging
import pathlib

from radjax.metrics import figures as plots

log = logging.getLogger("radjax")


def read_history(workdir) -> list[dict]:
  """Every line of `workdir/metrics.jsonl` (epoch records and events), in order."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_records(history: list[dict]) -> list[dict]:
  return [h for h in history if "event" not in h]


class Reporter:
  """Writes a run's per-epoch records. `history` starts as what `workdir` holds up to `epoch`
  `last_kept` (a resume drops records of epochs after its checkpoint)."""

  def __init__(self, workdir, num_epochs: int, last_kept: int = 0, write: bool = True):
    """`write=False` (every process but the first of a multi-process run) keeps the history in
    memory and writes nothing."""
    self.workdir = pathlib.Path(workdir)
    self.num_epochs = num_epochs
    self.write = write
    self.history = [h for h in read_history(self.workdir) if h["epoch"] <= last_kept]
    self._tensorboard = None

  def event(self, record: dict) -> None:
    """A non-metric line in the history (e.g. settings changed at a resume)."""
    self.history.append(record)
    if self.write:
      self._write_history()

  def epoch(self, record: dict) -> None:
    self.history.append(record)
    if not self.write:
      return
    self._write_history()
    self._write_tensorboard(record)
    plots.plot_curves(epoch_records(self.history), self.workdir / "curves.png")
    print(f"epoch {record['epoch']:>3}/{self.num_epochs}  loss {record['loss']:.4f}  "
          f"acc {record['accuracy']:.3f}  |  val loss {record['val_loss']:.4f}  "
          f"acc {record['val_accuracy']:.3f}  AUC {record['val_auc']:.3f}  |  "
          f"{record['images_per_s']:.1f} img/s  {record['epoch_seconds']:.0f} s", flush=True)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()

  def _write_history(self) -> None:
    # Rewritten whole, before the checkpoint is saved: a resume then drops lines of later epochs.
    (self.workdir / "metrics.jsonl").write_text(
        "".join(json.dumps(h) + "\n" for h in self.history))

  def _write_tensorboard(self, record: dict) -> None:
    try:
      from radjax.data.preprocess import tensorflow

      tf = tensorflow()
    except ImportError:  # training from arrays on a machine without TensorFlow
      return
    if self._tensorboard is None:
      self._tensorboard = tf.summary.create_file_writer(str(self.workdir / "tensorboard"))
    with self._tensorboard.as_default(step=record["epoch"]):
      for key, value in record.items():
        if isinstance(value, (int, float)):
          tf.summary.scalar(key, value)
    self._tensorboard.flush()
