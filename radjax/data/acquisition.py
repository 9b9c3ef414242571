"""Acquisition augmentation for training: framing bands, burned-in overlays, intensity changes.

Off by default (`configs/hello_world.py` stays the paper's); `config.augment.framing`,
`.overlays` and `.intensity` each give a probability and ranges. Like Keras' affine augmentation
(`augment.py`), every random choice is drawn on the host from (seed, epoch, position) and
travels as numbers appended to the example's transform row (`PARAMS` below), so an epoch is a pure
function of (seed, epoch) and a resume sees the same films. The application, `apply`, is written
once over an array module: NumPy in the tf.data pipeline (`augment_on="host"`), jax.numpy inside
the jitted step (`augment_on="device"`); the two agree to float rounding (tested).

On the cached S x S film in [0, 255], after the affine transform, in this order:
  intensity  gamma (exponent e^U(-ln g, ln g)), contrast about the film's mean, brightness, a
             Gaussian blur (sigma in pixels of the S x S film), and noise (uniform, from an integer
             hash of (seed, pixel), identical in NumPy and JAX)
  framing    one of three, alike: uniform bands on 1-4 sides (up to `max_fraction` of a side, one
             random grey); a pad (the film shrunk to 75-95% within a frame of that grey); or a
             tighter crop (75-95% of each side, enlarged back). Pads and crops resample by
             integer index arithmetic (nearest neighbour), identical in NumPy and JAX
  overlays   one sprite from `sprite_bank`: a random string of letters and digits, or a boxed
             letter marker, at a random place, in a light grey

The stress test (`perturb.py`) uses its own strings (dates, ids, technique words, L/R markers),
colours (black, white, mid-grey bands) and corner positions, so that a model cannot pass it by
having seen its perturbations.
"""

from __future__ import annotations

import functools
import math
import string

import numpy as np

ACQUISITION_STREAM = 3  # SeedSequence stream of these draws (see sampling.py for the others)
PARAMS = ("band_grey", "band_top", "band_bottom", "band_left", "band_right", "frame_kind",
          "frame_top", "frame_left", "frame_height", "frame_width", "overlay_on",
          "sprite", "overlay_x", "overlay_y", "overlay_grey", "gamma", "contrast", "brightness",
          "noise", "noise_seed", "blur")
WIDTH = len(PARAMS)
_AT = {name: i for i, name in enumerate(PARAMS)}
MIN_BAND = 0.02  # a band narrower than 2% of a side is no framing change
FRAME_KINDS = ("bands", "pad", "crop")  # frame_kind 0, 1, 2
FRAME_SCALE = (0.75, 0.95)  # a pad's film, a crop's window: this share of each side
OVERLAY_GREYS = (170.0, 255.0)  # overlays are burned in light
NOISE_SEEDS = 1 << 24  # float32 holds these integers exactly
# Training's overlay text: random tokens of these characters; markers: letters that are not the
# stress test's L / R.
TOKEN_CHARACTERS = string.ascii_uppercase + string.digits
TRAINING_MARKERS = ("A", "P", "X", "S", "AP", "PA")
TEXT_TOKENS = 24
TEXT_HEIGHTS = (0.03, 0.05, 0.07)  # font heights, shares of the film's side
MARKER_HEIGHT = 0.08
BANK_SEED = 20180531  # the sprite bank is the same in every run


def active(augment) -> bool:
  """Whether any acquisition augmentation is on (a static fact of the config)."""
  return augment.enabled and any(augment[group].probability > 0
                                 for group in ("framing", "overlays", "intensity"))


def blur_radius(augment) -> int:
  """The blur kernel's half-width: 3 sigma of the largest sigma drawn (static)."""
  return int(math.ceil(3 * augment.intensity.blur)) if augment.intensity.probability > 0 else 0


NUM_DRAWS = 27  # per example: 3 on/off, 4 sides + 1 forced side, 4 extents, 11 values, 4 frame


def epoch_params(seed: int, epoch: int, count: int, augment, size: int) -> np.ndarray:
  """[count, WIDTH] float32 parameters, row i a function of (seed, epoch, i) only (one block of
  uniforms, row by row, as `augment.epoch_uniforms`); neutral values (no change) where a group is
  off or not drawn. Every group always takes the same uniforms, used or not, so turning one on
  leaves the others' draws where they were."""
  u = np.random.default_rng([seed, epoch, ACQUISITION_STREAM]).random((count, NUM_DRAWS))
  framing, overlays, intensity = augment.framing, augment.overlays, augment.intensity
  on = u[:, 0:3] < [framing.probability, overlays.probability, intensity.probability]
  sides = (u[:, 3:7] < 0.5) | (np.floor(u[:, 7:8] * 4) == np.arange(4))  # at least one side
  extents = MIN_BAND + u[:, 8:12] * (max(framing.max_fraction, MIN_BAND) - MIN_BAND)
  p = np.zeros((count, WIDTH), np.float32)
  p[:, _AT["band_grey"]] = 255.0 * u[:, 12]
  kind = np.floor(u[:, 23] * len(FRAME_KINDS)).astype(int)
  p[:, _AT["band_top"]:_AT["band_right"] + 1] = np.where(on[:, :1] & sides & (kind[:, None] == 0),
                                                         extents, 0.0)
  # Pad or crop: an integer box (top, left, height, width) of the S x S film.
  scale = FRAME_SCALE[0] + u[:, 24] * (FRAME_SCALE[1] - FRAME_SCALE[0])
  extent = np.maximum(np.round(scale * size), 1)
  p[:, _AT["frame_kind"]] = np.where(on[:, 0], kind, 0)
  p[:, _AT["frame_height"]] = p[:, _AT["frame_width"]] = extent
  p[:, _AT["frame_top"]] = np.floor(u[:, 25] * (size - extent + 1))
  p[:, _AT["frame_left"]] = np.floor(u[:, 26] * (size - extent + 1))
  p[:, _AT["overlay_on"]] = on[:, 1]
  p[:, _AT["sprite"]] = np.floor(u[:, 13] * len(sprite_bank(size)))
  p[:, _AT["overlay_x"]], p[:, _AT["overlay_y"]] = u[:, 14], u[:, 15]
  p[:, _AT["overlay_grey"]] = OVERLAY_GREYS[0] + u[:, 16] * (OVERLAY_GREYS[1] - OVERLAY_GREYS[0])
  log_g, log_c = math.log(intensity.gamma), math.log1p(intensity.contrast)
  drawn = {"gamma": np.exp(log_g * (2 * u[:, 17] - 1)),
           "contrast": np.exp(log_c * (2 * u[:, 18] - 1)),
           "brightness": intensity.brightness * (2 * u[:, 19] - 1),
           "noise": intensity.noise * u[:, 20],
           "noise_seed": np.floor(u[:, 21] * NOISE_SEEDS),
           "blur": intensity.blur * u[:, 22]}
  neutral = {"gamma": 1.0, "contrast": 1.0}
  for name, values in drawn.items():
    p[:, _AT[name]] = np.where(on[:, 2], values, neutral.get(name, 0.0))
  return p


@functools.cache
def sprite_bank(size: int) -> np.ndarray:
  """(n, size // 2, size // 2) float32 alpha masks of training's overlays at image size `size`:
  text tokens at three heights and boxed markers, drawn with Pillow's bundled font."""
  from PIL import Image, ImageDraw, ImageFont

  rng = np.random.default_rng(BANK_SEED)
  side = size // 2
  tokens = ["".join(rng.choice(list(TOKEN_CHARACTERS), rng.integers(3, 9)))
            for _ in range(TEXT_TOKENS)]
  sprites = []
  for k, token in enumerate(tokens):
    font = ImageFont.load_default(size=max(6, round(TEXT_HEIGHTS[k % 3] * size)))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).text((0, 0), token, font=font, fill=255)
    sprites.append(mask)
  for letters in TRAINING_MARKERS:
    height = max(8, round(MARKER_HEIGHT * size))
    font = ImageFont.load_default(size=height)
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    box = draw.textbbox((0, 0), letters, font=font)
    pad = max(2, height // 6)
    draw.rectangle((0, 0, box[2] + 2 * pad, box[3] + 2 * pad), outline=255, width=max(1, pad // 2))
    draw.text((pad, pad), letters, font=font, fill=255)
    sprites.append(mask)
  return np.stack([np.asarray(s, np.float32) / 255.0 for s in sprites])


def _uniform_hash(xp, seed, height: int, width: int):
  """(H, W, 1) uniforms in [0, 1) from a 32-bit integer hash of (seed, pixel index): the same
  bits in NumPy and JAX (wrap-around uint32 arithmetic)."""
  index = xp.arange(height * width, dtype=xp.uint32).reshape(height, width, 1)
  seed = xp.reshape(seed.astype(xp.uint32), (1, 1, 1))  # an array: wrap-around, no warning
  h = index * xp.uint32(0x9E3779B1) + seed * xp.uint32(0x85EBCA77)
  h = h ^ (h >> xp.uint32(16))
  h = h * xp.uint32(0x7FEB352D)
  h = h ^ (h >> xp.uint32(15))
  h = h * xp.uint32(0x846CA68B)
  h = h ^ (h >> xp.uint32(16))
  return (h >> xp.uint32(8)).astype(xp.float32) * xp.float32(1.0 / (1 << 24))


def _blur(xp, image, sigma, radius: int):
  """Separable Gaussian blur of (H, W, C) with edge padding; sigma 0 leaves the image as is."""
  if radius == 0:
    return image
  offsets = xp.arange(-radius, radius + 1, dtype=xp.float32)
  safe = xp.maximum(sigma, xp.float32(1e-3))
  weights = xp.exp(-(offsets ** 2) / (2 * safe * safe))
  weights = xp.where(sigma > 0, weights, (offsets == 0).astype(xp.float32))
  weights = weights / weights.sum()
  height, width = image.shape[:2]
  padded = xp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="edge")
  rows = sum(weights[k] * padded[k:k + height] for k in range(2 * radius + 1))
  padded = xp.pad(rows, ((0, 0), (radius, radius), (0, 0)), mode="edge")
  return sum(weights[k] * padded[:, k:k + width] for k in range(2 * radius + 1))


def _frame(xp, image, at):
  """A pad (kind 1: the film shrunk into the box, the rest the band grey) or a crop (kind 2: the
  box enlarged to the film's size), nearest neighbour by integer arithmetic; kind 0: as is."""
  height, width = image.shape[:2]
  i32 = xp.int32
  kind = at["frame_kind"].astype(i32)
  top, left = at["frame_top"].astype(i32), at["frame_left"].astype(i32)
  box_h = xp.maximum(at["frame_height"].astype(i32), 1)  # >= 1 as drawn; 0 in a bare row
  box_w = xp.maximum(at["frame_width"].astype(i32), 1)
  r = xp.arange(height, dtype=i32).reshape(height, 1)
  c = xp.arange(width, dtype=i32).reshape(1, width)
  pad_r, pad_c = ((r - top) * height) // box_h, ((c - left) * width) // box_w
  crop_r, crop_c = top + (r * box_h) // height, left + (c * box_w) // width
  source_r = xp.clip(xp.where(kind == 1, pad_r, xp.where(kind == 2, crop_r, r)), 0, height - 1)
  source_c = xp.clip(xp.where(kind == 1, pad_c, xp.where(kind == 2, crop_c, c)), 0, width - 1)
  inside = ((kind != 1) | ((r >= top) & (r < top + box_h) & (c >= left) & (c < left + box_w)))
  return xp.where(inside[..., None], image[source_r, source_c], at["band_grey"])


def apply(xp, image, params, augment):
  """One (S, S, C) float32 film in [0, 255] under its WIDTH params (a row of `epoch_params`).
  `xp`: numpy or jax.numpy."""
  f32 = xp.float32
  image = image.astype(f32)
  params = params.astype(f32)
  height, width = image.shape[:2]
  at = {name: params[i] for i, name in enumerate(PARAMS)}
  if augment.intensity.probability > 0:
    image = f32(255.0) * (xp.clip(image, 0, 255) / f32(255.0)) ** at["gamma"]
    mean = image.mean()
    image = mean + (image - mean) * at["contrast"] + f32(255.0) * at["brightness"]
    image = _blur(xp, xp.clip(image, 0, 255), at["blur"], blur_radius(augment))
    noise = (_uniform_hash(xp, at["noise_seed"], height, width) - f32(0.5)) * f32(math.sqrt(12))
    image = xp.clip(image + f32(255.0) * at["noise"] * noise, 0, 255)
  rows = xp.arange(height, dtype=f32).reshape(height, 1, 1)
  columns = xp.arange(width, dtype=f32).reshape(1, width, 1)
  if augment.framing.probability > 0:
    image = _frame(xp, image, at)
    band = ((rows < at["band_top"] * height) | (rows >= height - at["band_bottom"] * height)
            | (columns < at["band_left"] * width) | (columns >= width - at["band_right"] * width))
    image = xp.where(band, at["band_grey"], image)
  if augment.overlays.probability > 0:
    bank = xp.asarray(sprite_bank(height))
    side = bank.shape[1]
    top = xp.floor(at["overlay_y"] * (height - side)).astype(xp.int32)
    left = xp.floor(at["overlay_x"] * (width - side)).astype(xp.int32)
    r, c = rows.astype(xp.int32) - top, columns.astype(xp.int32) - left
    inside = (r >= 0) & (r < side) & (c >= 0) & (c < side)
    sprite = bank[at["sprite"].astype(xp.int32)]
    alpha = xp.where(inside, sprite[xp.clip(r, 0, side - 1), xp.clip(c, 0, side - 1)], 0.0)
    alpha = alpha * at["overlay_on"]
    image = image * (1 - alpha) + at["overlay_grey"] * alpha
  return image.astype(f32)
