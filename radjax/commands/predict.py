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
import logging
import pathlib

import numpy as np

from radjax.data import images
from radjax.metrics.probabilities import logit

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


def label_thresholds(workdir, class_names, threshold: float | None = None, meta: dict | None = None
                     ) -> tuple[dict[str, float], dict[str, float], str]:
  """A multilabel run's (probability threshold per label, the same as logits, where they came
  from): `--threshold` for every label, else the run's operating points (each label's, chosen on
  validation by `radjax evaluate`) when they belong to the checkpoint whose metadata is `meta`,
  else 0.5."""
  from radjax.commands.operating_point import OPERATING_POINT

  if threshold is not None:
    cut = _checked(threshold)
    return dict.fromkeys(class_names, cut), dict.fromkeys(class_names, logit(cut)), "--threshold"
  point, why = _stored_point(workdir, meta)
  if point is not None and point.get("task") == "multilabel":
    chosen = {n: point["labels"].get(n) or {"threshold": 0.5, "threshold_logit": 0.0}
              for n in class_names}
    return ({n: c["threshold"] for n, c in chosen.items()},
            {n: c["threshold_logit"] for n, c in chosen.items()},
            f"{pathlib.Path(workdir) / OPERATING_POINT} ({point['rule']}, each label's own)")
  return (dict.fromkeys(class_names, 0.5), dict.fromkeys(class_names, 0.0),
          f"default: {why}" if why else
          "default (no operating points: run radjax evaluate to choose them on VAL)")


def _stored_point(workdir, meta: dict | None) -> tuple[dict | None, str | None]:
  """The workdir's operating point if it belongs to the checkpoint of `meta` (else None, and why
  not, as a warning)."""
  from radjax.commands.operating_point import bound_operating_point, read_operating_point

  if meta is None:
    return read_operating_point(workdir), None
  point, why = bound_operating_point(workdir, meta["epoch"], meta)
  if why:
    why += (f"; deciding at probability 0.5 (run radjax evaluate with this --checkpoint to "
            "choose one for it)")
    log.warning("%s", why)
  return point, why


def _checked(threshold: float) -> float:
  from radjax.errors import UserError

  if not 0 < threshold < 1:
    raise UserError(f"--threshold {threshold}: expected a probability strictly between 0 and 1")
  return threshold


def decision_threshold(workdir, threshold: float | None = None, meta: dict | None = None
                       ) -> tuple[float, float, str]:
  """(probability threshold, the same as a logit, where it came from): `--threshold`, else the
  run's operating point (chosen on validation by `radjax evaluate`) when it belongs to the
  checkpoint whose metadata is `meta`, else 0.5. Decisions compare logits: between saturated
  scores (probabilities that round to 1) only the stored logit decides as evaluate did."""
  from radjax.commands.operating_point import OPERATING_POINT

  if threshold is not None:
    return _checked(threshold), logit(_checked(threshold)), "--threshold"
  point, why = _stored_point(workdir, meta)
  if point is not None and point.get("task", "binary") == "binary":
    return (point["threshold"], point["threshold_logit"],
            f"{pathlib.Path(workdir) / OPERATING_POINT} ({point['rule']})")
  return 0.5, 0.0, (f"default: {why}" if why else
                    "default (no operating point: run radjax evaluate to choose one on VAL)")


def run_decision(workdir, trained) -> tuple[object, object, str]:
  """(threshold(s), the same as logit(s), where they came from) that `radjax predict` applies to
  a loaded run (`run.load`) without `--threshold`: binary, one each; multilabel, a dict of each
  label's; multiclass, (None, None, "the most probable class")."""
  meta = {**trained.meta, "epoch": trained.epoch}
  if trained.task == "binary":
    return decision_threshold(workdir, None, meta)
  if trained.task == "multilabel":
    return label_thresholds(workdir, trained.class_names, None, meta)
  return None, None, "the most probable class"


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


def format_text(results: list[Prediction], class_names) -> str:
  width = max((len(r.path) for r in results), default=0)
  lines = []
  for r in results:
    if r.error:
      lines.append(f"{r.path:<{width}}  ERROR  {r.error}")
    else:
      spread = "" if r.probability_sd is None else f" +- {r.probability_sd:.4f}"
      if r.probabilities is None:
        shown = f"p({class_names[1]})={r.probability:.4f}{spread}"
      elif r.probabilities_sd is not None:  # multilabel with TTA: every label's own spread
        shown = "  ".join(f"p({n})={p:.4f} +- {r.probabilities_sd[n]:.4f}"
                          for n, p in r.probabilities.items())
      else:  # every class; the spread is the predicted class' probability's
        shown = "  ".join(f"p({n})={p:.4f}{spread if n == r.label else ''}"
                          for n, p in r.probabilities.items())
      lines.append(f"{r.path:<{width}}  {shown}  {r.label}")
  return "\n".join(lines)


def format_json(results: list[Prediction], class_names, threshold: float | None = 0.5) -> str:
  """`threshold` None: a multiclass run (the most probable class decides); a dict: a multilabel
  run's threshold per label."""
  return json.dumps({"class_names": list(class_names), "threshold": threshold,
                     "predictions": [dataclasses.asdict(r) for r in results]}, indent=2)


def format_csv(results: list[Prediction], class_names, multiclass: bool | None = None) -> str:
  """`multiclass`: a probability column per class (multiclass and multilabel runs; the class
  column holds a multilabel run's labels joined by "+"); None: inferred from the results (a run
  whose every file failed: say it)."""
  out = io.StringIO()
  writer = csv.writer(out)
  if multiclass is None:
    multiclass = any(r.probabilities for r in results)
  if multiclass:  # a probability column per class
    writer.writerow(["path", *(f"probability_{n}" for n in class_names), "class", "error",
                     "probability_sd"])
    for r in results:
      shown = [f"{r.probabilities[n]:.6f}" for n in class_names] if r.probabilities else [
          ""] * len(class_names)
      writer.writerow([r.path, *shown, r.label or "", r.error or "",
                       "" if r.probability_sd is None else f"{r.probability_sd:.6f}"])
    return out.getvalue()
  writer.writerow(["path", f"probability_{class_names[1]}", "class", "error", "probability_sd"])
  for r in results:
    writer.writerow([r.path, "" if r.probability is None else f"{r.probability:.6f}",
                     r.label or "", r.error or "",
                     "" if r.probability_sd is None else f"{r.probability_sd:.6f}"])
  return out.getvalue()


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
    shown, cut, source = _checked(threshold), logit(_checked(threshold)), "--threshold"
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
