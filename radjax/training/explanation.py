"""Where in an image a trained network looks, as Grad-CAM and occlusion maps (`radjax explain`,
the reading page).

- Grad-CAM (Selvaraju et al. 2017): the gradient of the explained class' score with respect to a
  block's activations (default mixed10), averaged over space per channel, weights the channels;
  ReLU of the weighted sum is the map of evidence for that class. The score is the class' logit
  (multiclass), or the single logit for the second class and its negation for the first (binary).
  The explained class is the predicted one unless `--class` names another. The block's activations
  and their gradient come from InceptionV3's `sow`/"explain" hooks, no-ops in training.
- Occlusion sensitivity (model-agnostic): a square patch of the image's mean value is slid over
  a grid; the map is the drop at each position of the binary logit, or of the explained class'
  log-probability (multiclass): positive where hiding the patch lowers the evidence. The occluded
  copies go through the run's jitted inference in padded batches.
Both maps are computed on the network's input and mapped back onto the original image's geometry
(undoing the squash or the padding of `preprocess.resize`), so they overlay the film as stored.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from radjax.data import images, preprocess
from radjax.errors import UserError
from radjax.metrics import classification as metrics
from radjax.models import BLOCKS


LAYERS = tuple(name for name, _ in BLOCKS)


@dataclasses.dataclass
class Explanation:
  path: str
  pixels: np.ndarray        # the decoded image, float [0, 255], (H, W, 3)
  probability: float        # binary: of the second class; multiclass: of the predicted class
  label: str                # the predicted class
  gradcam: np.ndarray       # (H, W), >= 0, evidence for the explained class, on the original image
  occlusion: np.ndarray     # (H, W), score drop, on the original image
  layer: str
  explained: str = ""       # the class the maps are about (default: the predicted one)
  probabilities: dict[str, float] | None = None  # multiclass, multilabel: every class' / label's
  multilabel: bool = False  # label: every label above probability 0.5 ("+"-joined, or "none")
  figure: pathlib.Path | None = None  # where `explain_files` wrote its figure


def gradcam(model, variables, image: np.ndarray, layer: str = "mixed10", sign: float = 1.0,
            target: int = 0):
  """Grad-CAM of one model input (S, S, 3) at block `layer`: (map at the block's resolution,
  logit). Binary: `sign` -1 explains the first class (the negated logit); multiclass: the logit of
  class `target` is explained and returned."""
  if layer not in LAYERS:
    raise UserError(f"--layer {layer}: expected one of {', '.join(LAYERS)}")
  cam, value = _gradcam_fn(model, layer)(variables, jnp.asarray(image)[None], sign, target)
  return np.asarray(cam), float(value)


@functools.cache
def _gradcam_fn(model, layer: str):
  @jax.jit
  def run(variables, x, sign, target):
    _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    activations = state["intermediates"]["backbone"][layer][0]

    def score(eps):
      out = model.apply({**variables, "explain": {"backbone": {layer: eps}}}, x, train=False)[0]
      return sign * out if out.ndim == 0 else out[target]

    value, grads = jax.value_and_grad(score)(jnp.zeros_like(activations))
    weights = grads[0].mean(axis=(0, 1))  # per channel
    cam = jax.nn.relu(jnp.tensordot(activations[0].astype(jnp.float32), weights, axes=1))
    return cam, value if model.num_outputs > 1 else sign * value

  return run


def occlusion(logits_of, image: np.ndarray, patch: int, stride: int, batch_size: int,
              base: float | None = None):
  """Score drop when a `patch`-pixel square of the image's mean value covers each grid position:
  (rows, columns) map, position (i, j) covering rows i*stride .. i*stride+patch. `logits_of`
  gives one score per image (the binary logit, or a class' log-probability); `base` is the
  image's own score when the caller has it (else one more pass computes it)."""
  size = image.shape[0]
  starts = list(range(0, max(size - patch, 0) + 1, stride))
  if starts[-1] + patch < size:
    starts.append(size - patch)  # the last row and column of pixels are covered too
  fill = image.mean(axis=(0, 1))
  copies = []
  for top in starts:
    for left in starts:
      occluded = image.copy()
      occluded[top:top + patch, left:left + patch] = fill
      copies.append(occluded)
  if base is None:
    base = logits_of(image[None], batch_size)[0]
  drops = [base - logits_of(np.stack(copies[k:k + batch_size]), batch_size)
           for k in range(0, len(copies), batch_size)]
  return np.concatenate(drops).reshape(len(starts), len(starts)), starts


def _occlusion_to_input(drop, starts, patch: int, size: int) -> np.ndarray:
  """Each input pixel: the mean drop of the patches that covered it."""
  total, count = np.zeros((size, size)), np.zeros((size, size))
  for i, top in enumerate(starts):
    for j, left in enumerate(starts):
      total[top:top + patch, left:left + patch] += drop[i, j]
      count[top:top + patch, left:left + patch] += 1
  return total / np.maximum(count, 1)


def to_original(heatmap: np.ndarray, height: int, width: int, config) -> np.ndarray:
  """A map over the network's S x S input -> the original image's (H, W): squash is undone by
  resizing; padding (`resize="pad"`) is cropped first."""
  tf = preprocess.tensorflow()
  size = config.image_size
  m = tf.image.resize(tf.constant(heatmap, tf.float32)[..., None], [size, size], method="bilinear")
  if config.resize == "pad":
    scale = size / max(height, width)
    h, w = round(height * scale), round(width * scale)
    top, left = (size - h) // 2, (size - w) // 2
    m = m[top:top + h, left:left + w]
  return tf.image.resize(m, [height, width], method="bilinear")[..., 0].numpy()


def explain_file(trained, path, layer: str = "mixed10", patch_fraction: float = 0.125,
                 batch_size: int = 16, target_class: str | None = None) -> Explanation:
  """Grad-CAM and occlusion maps of one PNG/JPEG/DICOM file under a trained run (`run.load`),
  for `target_class` (default: the predicted class)."""
  config, names = trained.config, trained.class_names
  if target_class is not None and target_class not in names:
    raise UserError(f"--class {target_class}: not a class of this run ({', '.join(names)})")
  pixels = preprocess.decode(path, config)
  image = preprocess.model_input(pixels, config, images.bit_depth(path) > 8)
  variables = jax.device_get(trained.variables)
  batch_size = max(batch_size // jax.device_count(), 1) * jax.device_count()

  def logits_of(batch, size):
    padded = preprocess.pad_batch({"image": batch, "label": np.zeros(len(batch), np.int32)}, size)
    return trained.steps.logits_of(trained.variables, [padded])[0]

  logits = logits_of(image[None], batch_size)[0]
  multilabel = trained.task == "multilabel"
  probability = (metrics.sigmoid(logits) if multilabel
                 else metrics.probabilities(logits[None])[0])
  # Multilabel: the most probable label is explained unless --class names another.
  predicted = int(logits > 0) if np.ndim(logits) == 0 else int(np.argmax(logits))
  target = predicted if target_class is None else names.index(target_class)
  # Binary: the first class' evidence is the negated logit. Multiclass and multilabel: the
  # class' (label's) own logit.
  cam, _ = gradcam(trained.model, variables, image, layer,
                   sign=1.0 if target or multilabel else -1.0, target=target)
  def score(z):  # a batch's logits -> the explained score of each image
    if np.ndim(logits) == 0:
      return z  # the logit: red hides evidence for the second class
    z = np.asarray(z, np.float64)
    if multilabel:  # the label's own logit (log-odds): the other labels do not compete
      return z[:, target]
    return z[:, target] - np.logaddexp.reduce(z, axis=1)  # the class' log-probability

  patch = max(int(round(config.image_size * patch_fraction)), 1)
  drop, starts = occlusion(lambda batch, size: score(logits_of(batch, size)), image, patch,
                           max(patch // 2, 1), batch_size, base=score(logits[None])[0])
  height, width = pixels.shape[:2]
  occluded = _occlusion_to_input(drop, starts, patch, config.image_size)
  multiclass = np.ndim(logits) == 1
  label = names[predicted]
  if multilabel:  # the decision: every label above probability 0.5
    label = "+".join(n for n, p in zip(names, probability) if p > 0.5) or "none"
  return Explanation(str(path), pixels,
                     float(probability[predicted] if multiclass else probability),
                     label, to_original(cam, height, width, config),
                     to_original(occluded, height, width, config), layer, names[target],
                     {n: float(p) for n, p in zip(names, probability)} if multiclass else None,
                     multilabel)
