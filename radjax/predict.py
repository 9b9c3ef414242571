"""`radjax predict`: class probabilities for PNG, JPEG or DICOM files, one line per image.

Preprocessing is the checkpoint's own (image size, resize, value range, DICOM VOI), and class names
come from the checkpoint. A file that cannot be read gets its own error line; the others are still
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


def expand(inputs) -> list[pathlib.Path]:
  """Files as given, and the image files inside given directories (recursively, sorted)."""
  files = []
  for item in map(pathlib.Path, inputs):
    if item.is_dir():
      files += sorted(p for p in item.rglob("*")
                      if p.is_file() and not p.name.startswith(".") and images.is_image_file(p))
    else:
      files.append(item)
  return files


def predict_files(workdir, inputs, which: str = "best",
                  batch_size: int = 16) -> tuple[list[Prediction], list[str]]:
  """Predictions for every input file (errors included) and the checkpoint's class names."""
  import jax

  from radjax import checkpoints, config as config_lib, data, train

  variables, meta, _ = checkpoints.load_for_inference(workdir, which)
  config = config_lib.config_from_dict(meta["config"])
  class_names = meta["class_names"]
  model = train.create_model(config)
  logits_fn = jax.jit(lambda v, x: train.predict_logits(v, x, model=model))
  tf = data.tensorflow()

  results, pending = [], []

  def flush():
    if not pending:
      return
    batch = np.stack([image for _, image in pending])
    n = len(batch)
    # Pad to a fixed batch size: one compiled shape for every call.
    batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
    probabilities = np.asarray(jax.nn.sigmoid(logits_fn(variables, batch)))[:n]
    for (prediction, _), p in zip(pending, probabilities):
      prediction.probability = float(p)
      prediction.label = class_names[int(p > 0.5)]
    pending.clear()

  for path in expand(inputs):
    prediction = Prediction(str(path))
    results.append(prediction)
    if not path.is_file():
      prediction.error = "no such file"
      continue
    try:
      pixels = images.read_image(path, config.dicom_voi)
    except images.ImageReadError as e:
      prediction.error = str(e).removeprefix(f"{path}: ")
      continue
    resized = tf.round(data.resize(tf.constant(pixels), config))
    pending.append((prediction, data.to_model_range(resized, config.value_range).numpy()))
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


def format_json(results: list[Prediction], class_names) -> str:
  return json.dumps({"class_names": list(class_names),
                     "predictions": [dataclasses.asdict(r) for r in results]}, indent=2)


def format_csv(results: list[Prediction], class_names) -> str:
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["path", f"probability_{class_names[1]}", "class", "error"])
  for r in results:
    writer.writerow([r.path, "" if r.probability is None else f"{r.probability:.6f}",
                     r.label or "", r.error or ""])
  return out.getvalue()
