"""Removing a film's near-uniform margins (scanner borders, collimator shutters, letterboxing).

A classifier that sees a black band across the top of every chest film and none on abdominal ones
may learn the band. `config.crop_borders = "auto"` removes such margins from every decoded image
before it is resized, in training, evaluation, prediction, explanation and prepared datasets alike
(`preprocess.decode`), so a band can neither be learned nor be a film's only difference.

A margin row (or column) is one whose pixels nearly all lie within a few grey levels of the
outermost row's median: a band with burned-in text is not uniform and is kept (the stress test's
"text" family measures what such text does). Each side is cropped at most `MAX_SIDE_FRACTION` of
the image, and an image that is uniform throughout is returned whole.
"""

from __future__ import annotations

import numpy as np

# Grey levels (of 255) a margin pixel may differ from its edge's median: scanner borders are
# flat up to noise and JPEG ringing of a few levels, anatomy next to them is not.
TOLERANCE = 12.0
# Side of the square window the margin test averages over (pixels).
SMOOTHING = 5
# Share of a row's pixels that must be within TOLERANCE: a few stray pixels (dust, a thin line)
# do not stop a margin; a line of text (well over 2% of a row's pixels) does.
UNIFORM_SHARE = 0.98
# No side loses more than this share of the image: a dark abdomen's flank is not a border.
MAX_SIDE_FRACTION = 0.3
# Crops of the four sides interact (a letterbox band ends where a pillarbox band begins):
# a second pass finds what the first one uncovered; more never changed a film here.
PASSES = 2


def _uniform_rows(gray: np.ndarray, limit: int) -> np.ndarray:
  """Which of the first `limit` rows of `gray` are near-uniform around the first row's median."""
  reference = np.median(gray[0])
  return (np.abs(gray[:limit] - reference) <= TOLERANCE).mean(axis=1) >= UNIFORM_SHARE


def _margin(gray: np.ndarray, smooth: np.ndarray, limit: int) -> int:
  """Leading margin rows: near-uniform as they are (exact up to the film's first row), or once
  averaged (a noisy margin, found up to SMOOTHING // 2 rows short of the film)."""
  uniform = _uniform_rows(gray, limit) | _uniform_rows(smooth, limit)
  return int(np.argmin(uniform)) if not uniform.all() else limit


def border_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
  """(top, bottom, left, right) bounds of `pixels` (H, W, C) without its near-uniform margins:
  the image is `pixels[top:bottom, left:right]`."""
  from scipy import ndimage

  # Judged on a local mean: a noisy detector's margin (noise sd 5% of the range is 13 levels,
  # over TOLERANCE) is flat once averaged, while text strokes and anatomy edges stay.
  gray = np.asarray(pixels, np.float32).mean(axis=-1)
  smooth = ndimage.uniform_filter(gray, SMOOTHING, mode="nearest")
  height, width = gray.shape
  if gray.max() - gray.min() <= TOLERANCE:  # nothing but margin: keep it all
    return 0, height, 0, width
  max_rows, max_columns = int(height * MAX_SIDE_FRACTION), int(width * MAX_SIDE_FRACTION)
  cuts = [0, 0, 0, 0]  # top, bottom, left, right
  for _ in range(PASSES):
    window = (slice(cuts[0], height - cuts[1]), slice(cuts[2], width - cuts[3]))
    inner, inner_smooth = gray[window], smooth[window]
    sides = [(a, b) for a, b in ((inner, inner_smooth), (inner[::-1], inner_smooth[::-1]),
                                 (inner.T, inner_smooth.T), (inner.T[::-1], inner_smooth.T[::-1]))]
    limits = (max_rows, max_rows, max_columns, max_columns)
    more = [_margin(side, side_smooth, limit - cut) if limit > cut else 0
            for (side, side_smooth), limit, cut in zip(sides, limits, cuts)]
    if not any(more):
      break
    cuts = [cut + extra for cut, extra in zip(cuts, more)]
  return cuts[0], height - cuts[1], cuts[2], width - cuts[3]


def crop_borders(pixels: np.ndarray, mode: str) -> np.ndarray:
  """`pixels` (H, W, C) as they are ("off") or without near-uniform margins ("auto")."""
  if mode == "off":
    return pixels
  top, bottom, left, right = border_box(pixels)
  return np.ascontiguousarray(pixels[top:bottom, left:right])
