"""Realistic, seeded perturbations of a decoded film, for `radjax stress`.

Each family changes one thing a film's acquisition or framing may change without changing its
anatomy, at a few strengths from mild to severe:

  framing      band (5-25% of a side, black, white or grey), letterbox/pillarbox to another
               aspect ratio, tighter crop, looser crop (the film smaller within a dark frame)
  burned-in    text lines (dates, ids, technique words), laterality markers, a ruler
  acquisition  gamma, contrast (window width), brightness (window level), inverted greys, Gaussian
               and Poisson noise, blur, down-then-up sampling, JPEG compression

A perturbation is `apply(pixels, strength, rng) -> pixels` on float32 (H, W, 3) [0, 255] images
as `images.read_image` returns them (before border cropping and resizing: a band added here is
what `crop_borders="auto"` meets in a real film). Every random choice (side, colour, corner, text)
comes from `rng`, which `generator` derives from (seed, family, strength, image): the same call
gives the same film, and another family's draws do not move when a family is added.

Text is drawn with Pillow's bundled font (`ImageFont.load_default(size)`), never a hand-drawn one.
The strings, positions and colours here are the stress test's own: training augmentation must
draw from other ones, so that a model cannot pass the test by having seen its perturbations.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from typing import Callable

import numpy as np

# Colours of bands and frames, grey levels: what shutters, scanner beds and letterboxing show.
BAND_COLOURS = (0.0, 255.0, 128.0)
# Burned-in text: what a modality prints on a film (dates, ids, technique), in the stress test's
# own words (training augmentation draws others).
TEXT_LINES = ("2019-03-04 14:22", "ID 4821937", "AP PORTABLE", "SUPINE", "kVp 85  mAs 2.5",
              "ERECT  PA", "ACC# 77120394", "ST. MARY RADIOLOGY")
MARKERS = ("L", "R", "LT", "RT")
TEXT_GREYS = (255.0, 220.0)  # white and light grey, as modalities burn text in


def _side_band(shape, fraction: float, side: str) -> tuple[slice, slice]:
  """The rows and columns of a band of `fraction` of the height (top, bottom) or width (left,
  right) on `side`."""
  height, width = shape[:2]
  rows, columns = round(fraction * height), round(fraction * width)
  return {"top": (slice(0, rows), slice(None)),
          "bottom": (slice(height - rows, height), slice(None)),
          "left": (slice(None), slice(0, columns)),
          "right": (slice(None), slice(width - columns, width))}[side]


def band(pixels, fraction, rng, side=None, colour=None):
  """A uniform band over `fraction` of the height or width, on a random side, in a random
  colour (black, white, grey)."""
  side = side or rng.choice(("top", "bottom", "left", "right"))
  colour = BAND_COLOURS[rng.integers(len(BAND_COLOURS))] if colour is None else colour
  out = pixels.copy()
  out[_side_band(out.shape, fraction, side)] = colour
  return out


def _pad(pixels, top, bottom, left, right, value):
  return np.pad(pixels, ((top, bottom), (left, right), (0, 0)), constant_values=value)


def letterbox(pixels, ratio, rng):
  """Padded (black or grey) to an aspect ratio `ratio` times taller (letterbox) or wider
  (pillarbox), the film centred."""
  height, width = pixels.shape[:2]
  value = BAND_COLOURS[rng.choice((0, 2))]
  if rng.random() < 0.5:
    extra = round(height * (ratio - 1))
    return _pad(pixels, extra // 2, extra - extra // 2, 0, 0, value)
  extra = round(width * (ratio - 1))
  return _pad(pixels, 0, 0, extra // 2, extra - extra // 2, value)


def crop_tight(pixels, keep, rng):
  """`keep` of the height and width, at a random offset: a tighter collimation."""
  height, width = pixels.shape[:2]
  rows, columns = max(1, round(height * keep)), max(1, round(width * keep))
  top, left = rng.integers(0, height - rows + 1), rng.integers(0, width - columns + 1)
  return pixels[top:top + rows, left:left + columns].copy()


def crop_loose(pixels, margin, rng):
  """A dark frame of `margin` of the height and width around the film: a looser field of view."""
  height, width = pixels.shape[:2]
  rows, columns = round(height * margin), round(width * margin)
  return _pad(pixels, rows, rows, columns, columns, float(rng.uniform(0, 20)))


def _font(size: int):
  from PIL import ImageFont

  return ImageFont.load_default(size=max(size, 6))


def _stamp(pixels, draw_mask: Callable, grey: float):
  """`pixels` with `grey` painted where `draw_mask(ImageDraw, width, height)` draws."""
  from PIL import Image, ImageDraw

  height, width = pixels.shape[:2]
  mask = Image.new("L", (width, height), 0)
  draw_mask(ImageDraw.Draw(mask), width, height)
  alpha = np.asarray(mask, np.float32)[..., None] / 255.0
  return pixels * (1.0 - alpha) + grey * alpha


def _corner_xy(corner: str, box_w, box_h, width, height, inset):
  x = inset if "left" in corner else width - box_w - inset
  y = inset if "top" in corner else height - box_h - inset
  return x, y


CORNERS = ("top left", "top right", "bottom left", "bottom right")


def text(pixels, size, rng):
  """1-3 lines of burned-in text (`TEXT_LINES`) in a random corner; `size`: the font's height as
  a share of the film's."""
  height = pixels.shape[0]
  font = _font(round(size * height))
  lines = list(rng.choice(TEXT_LINES, size=rng.integers(1, 4), replace=False))
  corner = CORNERS[rng.integers(4)]
  grey = TEXT_GREYS[rng.integers(len(TEXT_GREYS))]

  def draw(d, width, height):
    spacing = round(size * height * 0.3)
    box = d.multiline_textbbox((0, 0), "\n".join(lines), font=font, spacing=spacing)
    x, y = _corner_xy(corner, box[2], box[3], width, height, round(0.02 * min(width, height)))
    d.multiline_text((x, y), "\n".join(lines), font=font, fill=255, spacing=spacing,
                     align="right" if "right" in corner else "left")

  return _stamp(pixels, draw, grey)


def marker(pixels, size, rng):
  """A laterality marker ("L", "R", "LT", "RT") in a box, in a random corner; `size`: its height
  as a share of the film's."""
  height = pixels.shape[0]
  font = _font(round(size * height * 0.75))
  letters = MARKERS[rng.integers(len(MARKERS))]
  corner = CORNERS[rng.integers(4)]

  def draw(d, width, height):
    box = d.textbbox((0, 0), letters, font=font)
    pad = max(2, round(size * height * 0.12))
    box_w, box_h = box[2] + 2 * pad, box[3] + 2 * pad
    x, y = _corner_xy(corner, box_w, box_h, width, height, round(0.04 * min(width, height)))
    d.rectangle((x, y, x + box_w, y + box_h), outline=255, width=max(1, pad // 2))
    d.text((x + pad, y + pad), letters, font=font, fill=255)

  return _stamp(pixels, draw, 255.0)


def ruler(pixels, length, rng):
  """A ruler with ticks along a random edge, `length` of that edge long."""
  edge = ("top", "bottom", "left", "right")[rng.integers(4)]

  def draw(d, width, height):
    along = width if edge in ("top", "bottom") else height
    across = max(3, round(0.025 * min(width, height)))
    inset = round(0.03 * min(width, height))
    start = round((along - length * along) / 2)
    span = round(length * along)
    for k in range(21):  # a tick every 1/20 of the ruler, long ones every 5
      at = start + round(k * span / 20)
      reach = across if k % 5 == 0 else across // 2
      if edge in ("top", "bottom"):
        y = inset if edge == "top" else height - inset - across
        d.line((at, y, at, y + reach), fill=255, width=1)
      else:
        x = inset if edge == "left" else width - inset - across
        d.line((x, at, x + reach, at), fill=255, width=1)
    if edge in ("top", "bottom"):
      y = inset if edge == "top" else height - inset - across
      d.line((start, y, start + span, y), fill=255, width=max(1, across // 4))
    else:
      x = inset if edge == "left" else width - inset - across
      d.line((x, start, x, start + span), fill=255, width=max(1, across // 4))

  return _stamp(pixels, draw, 255.0)


def gamma(pixels, g, rng):
  """Grey levels raised to `g` or 1/`g` (either way at random): another detector response."""
  exponent = g if rng.random() < 0.5 else 1.0 / g
  return 255.0 * (np.clip(pixels, 0, 255) / 255.0) ** exponent


def contrast(pixels, factor, rng):
  """Contrast around the film's mean times `factor` (a wider window) or 1/`factor` (a narrower
  one, clipped), at random."""
  mean = pixels.mean()
  scale = factor if rng.random() < 0.5 else 1.0 / factor
  return np.clip(mean + (pixels - mean) * scale, 0, 255)


def brightness(pixels, shift, rng):
  """Every grey level moved by `shift` of the range, up or down at random (a window level)."""
  return np.clip(pixels + 255.0 * shift * rng.choice((-1.0, 1.0)), 0, 255)


def invert(pixels, _strength, _rng):
  """Inverted greys: a MONOCHROME1 file read without inversion."""
  return 255.0 - pixels


def gaussian_noise(pixels, sigma, rng):
  """Additive Gaussian noise of standard deviation `sigma` of the range, the same in every
  channel (a grey film stays grey)."""
  noise = rng.normal(0.0, 255.0 * sigma, pixels.shape[:2] + (1,))
  return np.clip(pixels + noise, 0, 255)


def poisson_noise(pixels, photons, rng):
  """Quantum noise: Poisson counts of `photons` at full white (fewer photons, more noise)."""
  gray = pixels.mean(axis=-1, keepdims=True) / 255.0
  counts = rng.poisson(gray * photons)
  return np.repeat(np.clip(counts / photons * 255.0, 0, 255), 3, axis=-1)


def blur(pixels, sigma, _rng):
  """A Gaussian blur of `sigma` of the film's shorter side."""
  from scipy import ndimage

  pixels_sigma = sigma * min(pixels.shape[:2])
  return ndimage.gaussian_filter(pixels, (pixels_sigma, pixels_sigma, 0), mode="nearest")


def downsample(pixels, factor, _rng):
  """Down `factor` times (box filter) and back up (bilinear): a coarser detector."""
  from PIL import Image

  height, width = pixels.shape[:2]
  small = (max(1, round(width / factor)), max(1, round(height / factor)))
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]), "F")
                         .resize(small, Image.Resampling.BOX)
                         .resize((width, height), Image.Resampling.BILINEAR))
              for c in range(pixels.shape[-1])]
  return np.stack(channels, axis=-1)


def jpeg(pixels, quality, _rng):
  """Saved as JPEG at `quality` and read back."""
  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(
      buffer, "JPEG", quality=int(quality))
  with Image.open(buffer) as decoded:
    return np.asarray(decoded.convert("RGB"), np.float32)


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  group: str            # "framing", "burned-in" or "acquisition"
  strengths: tuple      # mild -> severe
  unit: str             # how a strength reads in tables ("{:.0%} of a side")
  apply: Callable
  moderate: int         # the index of the strength the headline and the contact sheet use

  def label(self, strength) -> str:
    return self.unit.format(strength)


FAMILIES = (
    Family("band", "framing", (0.05, 0.10, 0.15, 0.25), "{:.0%} of a side", band, 2),
    Family("letterbox", "framing", (1.15, 1.3, 1.6), "aspect x{:g}", letterbox, 1),
    Family("crop_tight", "framing", (0.9, 0.8, 0.7), "keep {:.0%}", crop_tight, 1),
    Family("crop_loose", "framing", (0.05, 0.1, 0.2), "{:.0%} frame", crop_loose, 1),
    Family("text", "burned-in", (0.02, 0.035, 0.05), "{:.1%} high", text, 1),
    Family("marker", "burned-in", (0.04, 0.07, 0.1), "{:.0%} high", marker, 1),
    Family("ruler", "burned-in", (0.3, 0.55, 0.8), "{:.0%} long", ruler, 1),
    Family("gamma", "acquisition", (1.25, 1.6, 2.0), "{0:g} or 1/{0:g}", gamma, 1),
    Family("contrast", "acquisition", (0.8, 0.6, 0.4), "x{0:g} or 1/{0:g}", contrast, 1),
    Family("brightness", "acquisition", (0.1, 0.2, 0.3), "+-{:.0%}", brightness, 1),
    Family("invert", "acquisition", (1,), "inverted", invert, 0),
    Family("gaussian_noise", "acquisition", (0.02, 0.05, 0.1), "sd {:.0%}", gaussian_noise, 1),
    Family("poisson_noise", "acquisition", (1000, 200, 50), "{:g} photons", poisson_noise, 1),
    Family("blur", "acquisition", (0.003, 0.006, 0.012), "sd {:.1%}", blur, 1),
    Family("downsample", "acquisition", (2, 4, 8), "1/{:g}", downsample, 1),
    Family("jpeg", "acquisition", (80, 50, 20), "quality {:g}", jpeg, 1),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def generator(seed: int, family: str, strength_index: int, image_index: int):
  """The random draws of one (family, strength, image): stable under adding families (keyed by
  the family's name, not its position)."""
  return np.random.default_rng([seed, zlib.crc32(family.encode()), strength_index, image_index])


def perturb(pixels: np.ndarray, family: Family, strength_index: int, seed: int,
            image_index: int) -> np.ndarray:
  """`pixels` under `family` at its `strength_index`-th strength, as float32 [0, 255]."""
  rng = generator(seed, family.name, strength_index, image_index)
  out = family.apply(np.asarray(pixels, np.float32), family.strengths[strength_index], rng)
  return np.ascontiguousarray(np.clip(out, 0, 255), np.float32)


def select(names: str) -> tuple[Family, ...]:
  """The families named in a comma-separated list ("" or "all": every one), in FAMILIES' order;
  an unknown name is a one-line error."""
  from radjax.errors import UserError

  if names in ("", "all"):
    return FAMILIES
  wanted = [n.strip() for n in names.split(",") if n.strip()]
  unknown = [n for n in wanted if n not in FAMILY_NAMES]
  if unknown:
    import difflib

    close = {n: difflib.get_close_matches(n.lower(), FAMILY_NAMES, n=1) for n in unknown}
    hints = [f"{n}: did you mean {c[0]}?" for n, c in close.items() if c]
    raise UserError(f"--families {names}: unknown {', '.join(unknown)} "
                    f"{'(' + '; '.join(hints) + ') ' if hints else ''}(known: "
                    f"{', '.join(FAMILY_NAMES)})")
  return tuple(f for f in FAMILIES if f.name in wanted)
