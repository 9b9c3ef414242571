"""`radjax predict`: class probabilities for PNG, JPEG or DICOM files, one line per image.

Preprocessing is the checkpoint's own (image size, resize, value range, DICOM VOI) through
`preprocess.model_input`, the chain validation uses; class names come from the checkpoint. A file that cannot be read gets its own error line; the others are still
predicted.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib

import numpy as np

from radjax import images


@dataclasses.dataclass
class Prediction:
  path: str
  probability: float | None = None  # probability of the second class (label 1)
  label: str | None = None
  error: str | None = None


def expand(inputs) -> list[tuple[pathlib.Path, str | None]]:
  """(path, error) for each file as given and each image file inside given folders (recursively,
  as training lists class folders); a folder without images is one entry with its error."""
  entries = []
  for item in map(pathlib.Path, inputs):
    if item.is_dir():
      files, _ = images.list_image_files(item)
      entries += [(pathlib.Path(f), None) for f in files]
      if not files:
        entries.append((item, "no image files in this folder (.png, .jpg, .jpeg or DICOM)"))
    elif not item.exists():
      entries.append((item, "no such file"))
    else:
      entries.append((item, None))
  return entries


def decision_threshold(workdir, threshold: float | None = None) -> tuple[float, str]:
  """(probability threshold, where it came from): `--threshold`, else the run's operating point
  (chosen on validation by `radjax evaluate`), else 0.5."""
  from radjax.errors import UserError
  from radjax.evaluate import OPERATING_POINT, read_operating_point

  if threshold is not None:
    if not 0 < threshold < 1:
      raise UserError(f"--threshold {threshold}: expected a probability strictly between 0 and 1")
    return threshold, "--threshold"
  point = read_operating_point(workdir)
  if point is not None:
    return point["threshold"], f"{pathlib.Path(workdir) / OPERATING_POINT} ({point['rule']})"
  return 0.5, "default (no operating point: run radjax evaluate to choose one on VAL)"


def predict_files(workdir, inputs, which: str = "best", batch_size: int = 16,
                  threshold: float = 0.5) -> tuple[list[Prediction], list[str]]:
  """Predictions for every input file (errors included) and the checkpoint's class names. An
  image is called the second class when its probability is above `threshold`."""
  import jax

  from radjax import metrics, preprocess, run as run_lib

  threshold_logit = metrics.logit(threshold)
  trained = run_lib.load(workdir, which)
  config, class_names = trained.config, trained.class_names
  batch_size = max(batch_size // jax.device_count(), 1) * jax.device_count()
  results, pending = [], []

  def flush():
    if not pending:
      return
    batch = preprocess.pad_batch({"image": np.stack([image for _, image in pending]),
                                  "label": np.zeros(len(pending), np.int32)}, batch_size)
    logits, _ = trained.steps.logits_of(trained.variables, [batch])
    labels = metrics.predicted_labels(logits, threshold_logit)
    for (prediction, _), logit, label in zip(pending, logits, labels):
      prediction.probability = float(metrics.sigmoid(logit))
      prediction.label = class_names[label]
    pending.clear()

  for path, error in expand(inputs):
    prediction = Prediction(str(path), error=error)
    results.append(prediction)
    if error:
      continue
    try:
      pixels = images.read_image(path, config.dicom_voi)
      high_bit = images.bit_depth(path) > 8
    except images.ImageReadError as e:
      prediction.error = str(e).removeprefix(f"{path}: ")
      continue
    pending.append((prediction, preprocess.model_input(pixels, config, high_bit)))
    if len(pending) == batch_size:
      flush()
  flush()
  return results, class_names


def format_text(results: list[Prediction], class_names) -> str:
  width = max((len(r.path) for r in results), default=0)
  lines = []
  for r in results:
    if r.error:
      lines.append(f"{r.path:<{width}}  ERROR  {r.error}")
    else:
      lines.append(f"{r.path:<{width}}  p({class_names[1]})={r.probability:.4f}  {r.label}")
  return "\n".join(lines)


def format_json(results: list[Prediction], class_names, threshold: float = 0.5) -> str:
  return json.dumps({"class_names": list(class_names), "threshold": threshold,
                     "predictions": [dataclasses.asdict(r) for r in results]}, indent=2)


def format_csv(results: list[Prediction], class_names) -> str:
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["path", f"probability_{class_names[1]}", "class", "error"])
  for r in results:
    writer.writerow([r.path, "" if r.probability is None else f"{r.probability:.6f}",
                     r.label or "", r.error or ""])
  return out.getvalue()
