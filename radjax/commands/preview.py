"""`radjax augment-preview`: one image as training sees it, plain and augmented (paper's Fig. 6).

The panels go through the training pipeline's own functions: `images.read_image`, then
`preprocess.resize`/`quantize`/`dequantize` (the cached image), and `augment.augment` with the
draws of example 0 in `augment.epoch_uniforms(seed, epoch, ...)`. Panel "epoch k" is training
epoch k (epochs count from 1). Training numbers examples in path order, so with the default image
(the first training image) and the config's seed, the panels are exactly that image in the first N
training epochs.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from radjax.data import images, listing, preprocess
from radjax.errors import UserError

PANEL_INCHES = 3.0  # each panel's cell in the grid, square
DPI = 100           # so a cell is PANEL_INCHES * DPI = 300 pixels wide and high
DEFAULT_VARIANTS = 8
PREVIEW_INDEX = 0   # the example index whose draws are shown (the first training image's index)


def grid_shape(panels: int) -> tuple[int, int]:
  """(rows, columns) of the most nearly square grid holding `panels` panels."""
  columns = math.ceil(math.sqrt(panels))
  return math.ceil(panels / columns), columns


def first_training_image(data_dir) -> str:
  """The example with index 0 in training: the first training file in path order."""
  folders = listing.list_folders(data_dir, splits=("train",), validate=False)
  return min(e.path for e in folders.splits["train"])


def preview_panels(path, n: int, seed: int, config) -> list[np.ndarray]:
  """[original, augmented in epoch 1, ..., epoch n] as uint8 (S, S, 3) images."""
  from radjax.data import augment

  tf = preprocess.tensorflow()
  high_bit = images.bit_depth(path) > 8
  resized = preprocess.resize(tf.constant(preprocess.decode(path, config)), config)
  # The training pipeline caches the resized image quantized and augments its float32 copy.
  image = preprocess.dequantize(
      preprocess.quantize(resized, high_bit, preprocess.cache_dtype(high_bit)))
  panels = [image]
  for epoch in range(1, n + 1):
    # The pipeline's row of this example and epoch: Keras' transform and any acquisition draws.
    row = augment.epoch_transforms(seed, epoch, PREVIEW_INDEX + 1, config.augment,
                                   config.image_size, config.image_size)[PREVIEW_INDEX]
    panels.append(augment.augment_row(image, tf.constant(row), config.augment))
  return [np.clip(np.round(p.numpy()), 0, 255).astype(np.uint8) for p in panels]


def save_grid(panels: list[np.ndarray], titles: list[str], out, heading: str = ""
              ) -> tuple[int, int]:
  """Writes the panels as a PNG grid under `heading`; returns its (width, height) in pixels."""
  from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend state

  rows, columns = grid_shape(len(panels))
  # "constrained" packs the panels and titles without changing the figure's pixel size.
  fig = Figure(figsize=(columns * PANEL_INCHES, rows * PANEL_INCHES), dpi=DPI, layout="constrained")
  for k, (panel, title) in enumerate(zip(panels, titles)):
    ax = fig.add_subplot(rows, columns, k + 1)
    ax.imshow(panel, vmin=0, vmax=255)
    ax.set_title(title)
    ax.axis("off")
  if heading:
    fig.suptitle(heading)
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=DPI, format="png")
  return round(columns * PANEL_INCHES * DPI), round(rows * PANEL_INCHES * DPI)


def augment_preview(data_dir, out, image=None, n: int = DEFAULT_VARIANTS, seed: int | None = None,
                    config=None) -> dict:
  """Writes the preview grid of `image` (default: the first training image of `data_dir`).

  `config` defaults to configs/default.py (its image_size, resize and augment settings); `seed`
  defaults to the config's seed. Returns {"out", "image", "size": (width, height), "panels"}.
  """
  if n < 1:
    raise UserError(f"--n {n}: need at least one augmented version")
  out = pathlib.Path(out)
  if out.is_dir():
    raise UserError(f"--out {out}: is a folder; name the PNG file to write")
  if not out.parent.is_dir():
    raise UserError(f"--out {out}: no such folder {out.parent}/")
  if config is None:
    from radjax.training.config import default_config

    config = default_config()
  seed = config.seed if seed is None else seed
  if image is None:
    if data_dir is None:
      raise UserError("give a DATA_DIR (its first training image is shown) or --image PATH")
    image = first_training_image(data_dir)
  panels = preview_panels(image, n, seed, config)
  titles = ["original"] + [f"epoch {k}" for k in range(1, n + 1)]
  size = save_grid(panels, titles, out, f"{pathlib.Path(image).name}: training augmentations "
                                        f"(seed {seed})")
  return {"out": str(out), "image": str(image), "size": size, "panels": panels}
