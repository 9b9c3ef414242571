"""Scoring files with a trained run or an export: one place that `predict`, `stress`, `serve` and
`export` share.

Preprocessing is the checkpoint's own (image size, resize, value range, DICOM VOI) through
`preprocess.model_input`, the chain validation uses; class names come from the checkpoint. A file
that cannot be read gets its own error; the others are still scored.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np

from radjax.data import images
from radjax.metrics.probabilities import logit
from radjax.training.decisions import checked_threshold

log = logging.getLogger("radjax")


@dataclasses.dataclass
class Prediction:
  path: str
  # Binary: the probability of the second class (label 1); multiclass: of the predicted class.
  # With TTA, the mean over the augmented copies.
  probability: float | None = None
  label: str | None = None
  error: str | None = None
  probability_sd: float | None = None  # with TTA: the spread over the augmented copies
  probabilities: dict[str, float] | None = None  # multiclass, multilabel: every class' / label's
  probabilities_sd: dict[str, float] | None = None  # multilabel with TTA: every label's spread


def expand(inputs) -> list[tuple[pathlib.Path, str | None]]:
  """(path, error) for each file as given and each image file inside given folders (recursively,
  as training lists class folders); a folder without images is one entry with its error."""
  entries = []
  for item in map(pathlib.Path, inputs):
    if item.is_dir():
      files, others = images.list_image_files(item)
      entries += [(pathlib.Path(f), None) for f in files]
      if others:  # said, not silently dropped: a .tif named directly is tried
        shown = ", ".join(pathlib.Path(p).name for p, _ in others[:5])
        log.warning("%s: skipped %d file(s) that are not .png, .jpg, .jpeg or DICOM (%s%s); name "
                    "one directly to try reading it", item, len(others), shown,
                    ", ..." if len(others) > 5 else "")
      if not files:
        entries.append((item, "no image files in this folder (.png, .jpg, .jpeg or DICOM)"))
    elif not item.exists():
      entries.append((item, "no such file"))
    else:
      entries.append((item, None))
  return entries


def tta_inputs(pixels, config, high_bit: bool, copies: int, seed: int,
               augment_config=None) -> np.ndarray:
  """`copies` training-style augmentations of one image (the run's augmentation settings, draws
  of epochs 1..copies of `seed` for example 0), as model inputs. Disabled augmentation gives
  `copies` identical plain inputs."""
  from radjax.data import augment, preprocess

  augment_config = config.augment if augment_config is None else augment_config
  image = preprocess.cached_image(pixels, config, high_bit)
  out = []
  for epoch in range(1, copies + 1):
    copy = image
    if augment_config.enabled:
      row = augment.epoch_transforms(seed, epoch, 1, augment_config, config.image_size,
                                     config.image_size)[0]
      copy = augment.augment_row(image, preprocess.tensorflow().constant(row), augment_config)
    out.append(preprocess.to_model_input(copy, config.value_range).numpy())
  return np.stack(out)


def predict_files(workdir, inputs, which: str = "best", batch_size: int = 16,
                  threshold: float | dict[str, float] | None = 0.5, tta: int = 0,
                  tta_seed: int = 0, augment_config=None,
                  threshold_logit: float | dict[str, float] | None = None,
                  trained=None) -> tuple[list[Prediction], list[str]]:
  """Predictions for every input file (errors included) and the checkpoint's class names. A
  binary run calls an image the second class when its probability is above `threshold`; a
  multilabel run calls each label above its threshold (`threshold`: one for all, or a dict of
  each label's); a multiclass run calls the most probable class (`threshold` does not apply).
  With `tta` N > 0,
  each image is predicted as N seeded augmented copies (`tta_inputs`): the mean and the standard
  deviation of their probabilities are reported, and the mean decides. `threshold_logit` (the
  same threshold as a logit, or a dict of each label's): single images are decided on their
  logits with it, as `radjax evaluate` decides (default: the logit of `threshold`). `trained`: the
  run's checkpoint already loaded (`run.load(workdir, which)`), else it is loaded here."""
  import jax

  from radjax.metrics import probabilities as metrics
  from radjax.data import preprocess
  from radjax.training import run as run_lib

  trained = trained or run_lib.load(workdir, which)
  config, class_names = trained.config, trained.class_names
  threshold = 0.5 if threshold is None else threshold
  multilabel = trained.task == "multilabel"
  if multilabel:
    cuts = np.array([threshold[n] if isinstance(threshold, dict) else threshold
                     for n in class_names])
  if threshold_logit is None and trained.task != "multiclass":
    threshold_logit = ({n: logit(t) for n, t in threshold.items()} if isinstance(threshold, dict)
                       else logit(threshold))
  logit_cuts = (np.array([threshold_logit[n] if isinstance(threshold_logit, dict)
                          else threshold_logit for n in class_names]) if multilabel else None)

  def probabilities_of(logits):  # multilabel: a sigmoid per label, not a softmax over them
    return metrics.sigmoid(logits) if multilabel else metrics.probabilities(logits)
  found = expand(inputs)
  # No larger a batch than the work needs (one file is not padded to 16 images), in powers of two
  # so that a few shapes are ever compiled and the persistent compilation cache keeps them.
  needed = tta or sum(1 for _, error in found if not error)
  batch_size = min(batch_size, 1 << max(needed - 1, 0).bit_length())
  batch_size = max(batch_size // jax.device_count(), 1) * jax.device_count()
  results, pending = [], []

  def flush():
    if not pending:
      return
    batch = preprocess.pad_batch({"image": np.stack([image for _, image in pending]),
                                  "label": np.zeros(len(pending), np.int32)}, batch_size)
    logits, _ = trained.steps.logits_of(trained.variables, [batch])
    for (prediction, _), scores in zip(pending, logits):
      decide(prediction, probabilities_of(scores[None])[0])
      # Decided on the logits, as evaluate does: a float sigmoid saturates.
      if np.ndim(scores) == 0:
        prediction.label = class_names[int(scores > threshold_logit)]
      elif multilabel:
        prediction.label = "+".join(n for n, z, cut in zip(class_names, scores, logit_cuts)
                                    if z > cut) or "none"
    pending.clear()

  def decide(prediction, probability, spread=None):
    """Fills in a prediction from one image's probability (binary) or probabilities (multiclass),
    with TTA their mean and the spread of the reported probability."""
    if np.ndim(probability) == 0:
      prediction.probability = float(probability)
      prediction.label = class_names[int(probability > threshold)]
    elif multilabel:  # every label above the threshold, "none" when no label is
      prediction.probabilities = {n: float(p) for n, p in zip(class_names, probability)}
      prediction.label = "+".join(n for n, p, cut in zip(class_names, probability, cuts)
                                  if p > cut) or "none"
      if spread is not None:
        prediction.probabilities_sd = {n: float(v) for n, v in zip(class_names, spread)}
      spread = None
    else:
      best = int(np.argmax(probability))
      prediction.probabilities = {n: float(p) for n, p in zip(class_names, probability)}
      prediction.probability, prediction.label = float(probability[best]), class_names[best]
      spread = None if spread is None else spread[best]
    prediction.probability_sd = None if spread is None else float(spread)

  for path, error in found:
    prediction = Prediction(str(path), error=error)
    results.append(prediction)
    if error:
      continue
    try:
      pixels = preprocess.decode(path, config)
      high_bit = images.bit_depth(path) > 8
    except images.ImageReadError as e:
      prediction.error = str(e).removeprefix(f"{path}: ")
      continue
    if tta:
      copies = tta_inputs(pixels, config, high_bit, tta, tta_seed, augment_config)
      logits = np.concatenate([trained.steps.logits_of(trained.variables, [preprocess.pad_batch(
          {"image": copies[k:k + batch_size], "label": np.zeros(len(copies[k:k + batch_size]),
                                                                 np.int32)}, batch_size)])[0]
                               for k in range(0, tta, batch_size)])
      probabilities = probabilities_of(logits)
      decide(prediction, probabilities.mean(axis=0), probabilities.std(axis=0))
      continue
    pending.append((prediction, preprocess.model_input(pixels, config, high_bit)))
    if len(pending) == batch_size:
      flush()
  flush()
  return results, class_names


def predict_exported(model, inputs, threshold: float | None = None, batch_size: int = 16
                     ) -> tuple[list[Prediction], list[str], object, str]:
  """`predict_files` with an export (`radjax export`) instead of a run: (predictions, class
  names, the threshold(s) applied, where they came from). Files are read as radjax reads them;
  the export preprocesses them (`radjax.exported.Exported.preprocess`) and decides at its stored
  operating point unless `threshold` is given (binary and multilabel runs)."""
  from radjax import exported
  from radjax.errors import UserError
  from radjax.metrics.probabilities import decided_labels, sigmoid, softmax

  loaded = model if isinstance(model, exported.Exported) else exported.load(model)
  names, task, point = loaded.class_names, loaded.task, loaded.metadata["operating_point"]
  source = f"{loaded.path / exported.METADATA} ({point.get('source', point.get('rule'))})"
  if task == "multiclass":
    if threshold is not None:
      raise UserError(f"--threshold {threshold}: a multiclass model calls the most probable "
                      "class; thresholds apply to binary and multilabel models")
    shown, cut = None, None
  elif threshold is not None:
    shown, cut, source = checked_threshold(threshold), logit(checked_threshold(threshold)), "--threshold"
    if task == "multilabel":
      shown, cut = dict.fromkeys(names, shown), dict.fromkeys(names, cut)
  else:
    shown, cut = point["threshold"], point["threshold_logit"]
  results, pending = [], []
  for path, error in expand(inputs):
    prediction = Prediction(str(path), error=error)
    results.append(prediction)
    if error:
      continue
    try:
      pixels = images.read_image(path, loaded.config.dicom_voi)
      pending.append((prediction, loaded.preprocess(pixels, images.bit_depth(path) > 8,
                                                    images.DECODED_RANGE, str(path))))
    except images.ImageReadError as e:
      prediction.error = str(e).removeprefix(f"{path}: ")
  if pending:
    batch = np.stack([image for _, image in pending])
    logits = np.concatenate([loaded.logits(batch[k:k + batch_size])
                             for k in range(0, len(batch), batch_size)])
    labels = decided_labels(logits, task, names, cut)
    for (prediction, _), z, label in zip(pending, logits, labels):
      prediction.label = label
      if task == "binary":
        prediction.probability = float(sigmoid(z))
      elif task == "multiclass":
        p = softmax(z)
        prediction.probabilities = {n: float(v) for n, v in zip(names, p)}
        prediction.probability = float(p.max())
      else:
        prediction.probabilities = {n: float(v) for n, v in zip(names, sigmoid(z))}
  return results, names, shown, source
