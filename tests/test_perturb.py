"""The stress test's perturbation families (`radjax.data.perturb`) keep their docstrings' promises,
each pinned by a small case worked out by hand: where a pad or band goes and how many rows it
takes, which greys and colours occur, that a change goes either way at random, the scale of noise
and of a count, the sigma of a blur, the box of a downsampling and the quality of a JPEG; the
families' strengths (the docs quote them), the seeding of every draw, and `select`.

Pure NumPy / Pillow / SciPy: no model, the same on every CPU."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from radjax.data import perturb
from radjax.errors import UserError

FAMILY = {f.name: f for f in perturb.FAMILIES}


def _grey(values):
  """A grey (H, W, 3) float32 film of the (H, W) `values`."""
  return np.repeat(np.asarray(values, np.float32)[..., None], 3, axis=-1)


def _ramp(height, width):
  """A grey film whose every pixel differs (so a window or a pad can be located exactly)."""
  return _grey(np.arange(height * width, dtype=np.float32).reshape(height, width) % 251)


def _rngs(count):
  return [np.random.default_rng(s) for s in range(count)]


# The families' contract: names, groups, strengths (mild -> severe), labels and the moderate one.

def test_every_family_keeps_the_strengths_and_labels_the_docs_quote():
  table = {(f.name, f.group, f.strengths, f.moderate, f.label(f.strengths[f.moderate]))
           for f in perturb.FAMILIES}
  assert table == {
      ("band", "framing", (0.05, 0.10, 0.15, 0.25), 2, "15% of a side"),
      ("letterbox", "framing", (1.15, 1.3, 1.6), 1, "aspect x1.3"),
      ("crop_tight", "framing", (0.9, 0.8, 0.7), 1, "keep 80%"),
      ("crop_loose", "framing", (0.05, 0.1, 0.2), 1, "10% frame"),
      ("text", "burned-in", (0.02, 0.035, 0.05), 1, "3.5% high"),
      ("marker", "burned-in", (0.04, 0.07, 0.1), 1, "7% high"),
      ("ruler", "burned-in", (0.3, 0.55, 0.8), 1, "55% long"),
      ("gamma", "acquisition", (1.25, 1.6, 2.0), 1, "1.6 or 1/1.6"),
      ("contrast", "acquisition", (0.8, 0.6, 0.4), 1, "x0.6 or 1/0.6"),
      ("brightness", "acquisition", (0.1, 0.2, 0.3), 1, "+-20%"),
      ("invert", "acquisition", (1,), 0, "inverted"),
      ("gaussian_noise", "acquisition", (0.02, 0.05, 0.1), 1, "sd 5%"),
      ("poisson_noise", "acquisition", (1000, 200, 50), 1, "200 photons"),
      ("blur", "acquisition", (0.003, 0.006, 0.012), 1, "sd 0.6%"),
      ("downsample", "acquisition", (2, 4, 8), 1, "1/4"),
      ("jpeg", "acquisition", (80, 50, 20), 1, "quality 50")}
  # In this order (the tables list them so), and FAMILY_NAMES names them in it.
  assert perturb.FAMILY_NAMES == ("band", "letterbox", "crop_tight", "crop_loose", "text",
                                  "marker", "ruler", "gamma", "contrast", "brightness", "invert",
                                  "gaussian_noise", "poisson_noise", "blur", "downsample", "jpeg")
  assert FAMILY["band"].label(0.05) == "5% of a side" and FAMILY["blur"].label(0.012) == "sd 1.2%"


# Seeding: `generator` and `perturb`.

def test_the_generator_is_keyed_by_seed_family_name_strength_and_image():
  first = perturb.generator(3, "band", 1, 5).random(4)
  np.testing.assert_array_equal(first, perturb.generator(3, "band", 1, 5).random(4))
  np.testing.assert_array_equal(
      first, np.random.default_rng([3, zlib.crc32(b"band"), 1, 5]).random(4))
  # Each argument moves the draw, and strength and image are not interchangeable.
  for other in [(4, "band", 1, 5), (3, "text", 1, 5), (3, "band", 2, 5), (3, "band", 1, 6),
                (3, "band", 5, 1)]:
    assert not np.array_equal(first, perturb.generator(*other).random(4)), other


def test_perturb_draws_from_its_own_key_so_adding_a_family_moves_no_other():
  """`perturb` keys its draws by the family's name (not its place in FAMILIES) and by the
  strength's index, and hands the family that strength."""
  import dataclasses

  film = _ramp(40, 60)
  band = FAMILY["band"]
  out = perturb.perturb(film, band, 2, seed=7, image_index=3)
  np.testing.assert_array_equal(out, perturb.band(film, 0.15, perturb.generator(7, "band", 2, 3)))
  renamed = dataclasses.replace(band, name="band2")
  draws = [perturb.perturb(film, renamed, 2, seed=7, image_index=i) for i in range(6)]
  np.testing.assert_array_equal(draws[3], perturb.band(film, 0.15,
                                                       perturb.generator(7, "band2", 2, 3)))
  assert any(not np.array_equal(d, perturb.perturb(film, band, 2, seed=7, image_index=i))
             for i, d in enumerate(draws))


def test_perturb_hands_the_family_float32_and_returns_clipped_contiguous_float32():
  seen = {}

  def wild(pixels, strength, rng):
    seen["dtype"], seen["strength"] = pixels.dtype, strength
    return (pixels.astype(np.float64) * strength - 100.0)[:, ::-1]  # out of range, a view

  family = perturb.Family("wild", "acquisition", (1.0, 3.0), "x{:g}", wild, 0)
  film = np.array([[[10, 20, 30], [40, 50, 120]]], np.uint8)
  out = perturb.perturb(film, family, 1, seed=0, image_index=0)
  assert seen == {"dtype": np.float32, "strength": 3.0}
  assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
  # 3x - 100, columns swapped: (40, 50, 120) -> (20, 50, 260 -> 255); (10, 20, 30) -> all < 0.
  np.testing.assert_array_equal(out, [[[20, 50, 255], [0, 0, 0]]])


def test_select_keeps_the_families_order_and_names_every_unknown_one():
  assert perturb.select("") == perturb.select("all") == perturb.FAMILIES
  assert [f.name for f in perturb.select(" jpeg , band,,invert ")] == ["band", "invert", "jpeg"]
  assert perturb.select("band,band") == (FAMILY["band"],)
  with pytest.raises(UserError) as error:
    perturb.select("glare,band,fog")
  assert str(error.value) == ("--families glare,band,fog: unknown glare, fog (known: "
                              + ", ".join(perturb.FAMILY_NAMES) + ")")


# Framing.

@pytest.mark.parametrize("side,rows,columns", [
    ("top", slice(0, 2), slice(None)), ("bottom", slice(10, 12), slice(None)),
    ("left", slice(None), slice(0, 3)), ("right", slice(None), slice(19, 22))])
def test_a_band_covers_its_share_of_the_side_rounded(side, rows, columns):
  """15% of 12 rows is 1.8: 2 rows (rounded, not truncated); 15% of 22 columns is 3.3: 3."""
  film = _ramp(12, 22)
  out = perturb.band(film, 0.15, np.random.default_rng(0), side=side, colour=128.0)
  want = film.copy()
  want[rows, columns] = 128.0
  np.testing.assert_array_equal(out, want)
  assert out is not film and np.array_equal(film, _ramp(12, 22))  # the input is left alone


def test_a_band_family_draw_is_one_side_in_one_of_three_colours_and_all_occur():
  film = _ramp(40, 60)  # 15%: 6 rows or 9 columns
  candidates = {}
  for side, rows, columns in [("top", slice(0, 6), slice(None)),
                              ("bottom", slice(34, 40), slice(None)),
                              ("left", slice(None), slice(0, 9)),
                              ("right", slice(None), slice(51, 60))]:
    for colour in (0.0, 255.0, 128.0):
      want = film.copy()
      want[rows, columns] = colour
      candidates[want.tobytes()] = (side, colour)
  seen = {candidates[perturb.band(film, 0.15, rng).tobytes()] for rng in _rngs(60)}
  assert {side for side, _ in seen} == {"top", "bottom", "left", "right"}
  assert {colour for _, colour in seen} == {0.0, 255.0, 128.0}


def test_letterbox_splits_the_extra_rows_or_columns_floor_half_before_and_both_occur():
  """A 10 x 30 film at x1.3: 3 more rows (1 above, 2 below) or 9 more columns (4 left, 5 right),
  in black or grey (128), never white."""
  film = _ramp(10, 30)
  candidates = {}
  for value in (0.0, 128.0):
    tall = np.full((13, 30, 3), value, np.float32)
    tall[1:11] = film
    wide = np.full((10, 39, 3), value, np.float32)
    wide[:, 4:34] = film
    candidates[tall.tobytes()] = ("letterbox", value)
    candidates[wide.tobytes()] = ("pillarbox", value)
  seen = {candidates[perturb.letterbox(film, 1.3, rng).tobytes()] for rng in _rngs(40)}
  assert seen == {("letterbox", 0.0), ("letterbox", 128.0), ("pillarbox", 0.0),
                  ("pillarbox", 128.0)}


@pytest.mark.parametrize("ratio,tall,wide", [(1.15, (115, 80), (100, 92)),
                                             (1.6, (160, 80), (100, 128))])
def test_letterbox_honours_the_ratio(ratio, tall, wide):
  """100 x 80 at x1.15: 15 more rows or 12 more columns; at x1.6: 60 or 48."""
  film = _ramp(100, 80)
  assert {perturb.letterbox(film, ratio, rng).shape[:2] for rng in _rngs(20)} == {tall, wide}


def test_a_tight_crop_is_a_window_of_its_share_at_every_offset():
  """A 13 x 17 film kept 90%: 11.7 -> 12 rows, 15.3 -> 15 columns; the window's corner takes
  each of the 2 x 3 possible places over draws."""
  film = _ramp(13, 17)
  offsets = set()
  for rng in _rngs(60):
    out = perturb.crop_tight(film, 0.9, rng)
    assert out.shape == (12, 15, 3)
    (top,), (left,) = np.nonzero(film[:2, :3, 0] == out[0, 0, 0])
    np.testing.assert_array_equal(out, film[top:top + 12, left:left + 15])
    offsets.add((int(top), int(left)))
  assert offsets == {(t, l) for t in range(2) for l in range(3)}
  # A keep that rounds to no row still keeps one pixel of the film.
  assert perturb.crop_tight(film, 0.01, np.random.default_rng(0)).shape == (1, 1, 3)


def test_a_loose_crop_frames_the_film_in_a_dark_grey_that_varies_within_0_to_20():
  """A 13 x 27 film in a 20% frame: 2.6 -> 3 rows above and below, 5.4 -> 5 columns each side."""
  film = _ramp(13, 27)
  greys = []
  for rng in _rngs(50):
    out = perturb.crop_loose(film, 0.2, rng)
    assert out.shape == (19, 37, 3)
    np.testing.assert_array_equal(out[3:16, 5:32], film)
    frame = np.ones((19, 37), bool)
    frame[3:16, 5:32] = False
    assert len(np.unique(out[frame])) == 1  # one uniform grey, in every channel
    greys.append(float(out[0, 0, 0]))
  assert 0.0 <= min(greys) < 2.0 and 18.0 < max(greys) <= 20.0
  assert len(set(greys)) == 50  # a fresh grey per draw


# Burned-in content.

def _painted(out):
  """Rows and columns of the pixels painted on a black film."""
  mask = out[..., 0] > 0
  return np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))


def test_text_is_one_to_three_lines_in_each_corner_in_white_or_light_grey():
  """On a black 400 x 600 film at 5% (a 20-pixel font): inset round(2% of 400) = 8 pixels from
  the corner's two edges (the font's own top bearing aside), whole lines apart."""
  height, width = 400, 600
  film = np.zeros((height, width, 3), np.float32)
  measure = ImageDraw.Draw(Image.new("L", (1, 1)))
  font = ImageFont.load_default(size=20)
  boxes = [measure.textbbox((0, 0), line, font=font) for line in perturb.TEXT_LINES]
  lines, corners, greys = set(), set(), set()
  for rng in _rngs(16):
    out = perturb.text(film, 0.05, rng)
    rows, columns = _painted(out)
    count = 1 + int(np.sum(np.diff(rows) > 1))  # runs of painted rows
    lines.add(count)
    if count == 1:
      # One line: its ink is one of the lines' boxes in the 20-pixel font (the right edge is the
      # advance, a few pixels past the ink).
      ink_height, ink_width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
      assert any(ink_height == bottom - top and right - 4 <= ink_width <= right
                 for _, top, right, bottom in boxes), (ink_height, ink_width)
    top = rows.min() < height / 2
    left = columns.min() < width / 2
    if top:
      assert 8 <= rows.min() <= 8 + 8 and rows.max() < height / 2
    else:
      assert rows.max() == height - 8 - 1 and rows.min() > height / 2
    if left:
      assert columns.min() in (8, 9) and columns.max() < width / 2
    else:
      assert width - 1 - columns.max() in (8, 9) and columns.min() > width / 2
    corners.add(("top " if top else "bottom ") + ("left" if left else "right"))
    greys.add(float(out.max()))  # the glyphs' solid strokes: the text's own grey
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
  assert lines == {1, 2, 3}
  assert corners == set(perturb.CORNERS)
  assert greys == {255.0, 220.0}


def test_a_marker_is_a_boxed_laterality_in_each_corner_inset_4_percent():
  """On a black 400 x 300 film at 10%: a 30-pixel font, pad round(4.8) = 5, outline 5 // 2 = 2
  pixels; the box (inclusive corners) spans the letters' box plus 2 pads, inset round(4% of
  300) = 12 from the corner's edges."""
  height, width = 400, 300
  film = np.zeros((height, width, 3), np.float32)
  font = ImageFont.load_default(size=30)
  measure = ImageDraw.Draw(Image.new("L", (1, 1)))
  box_widths = {measure.textbbox((0, 0), m, font=font)[2] + 10: m for m in perturb.MARKERS}
  assert len(box_widths) == 4  # L, R, LT and RT are told apart by their box
  seen = set()
  for rng in _rngs(24):
    out = perturb.marker(film, 0.1, rng)
    rows, columns = _painted(out)
    assert rows.max() - rows.min() == 30 + 10  # the letters' box height, 30, plus 2 pads
    top, left = rows.min() == 12, columns.min() == 12
    assert top or rows.max() == height - 12
    assert left or columns.max() == width - 12
    seen.add((box_widths[int(columns.max() - columns.min())], top, left))
    middle = out[(rows.min() + rows.max()) // 2, columns.min():, 0]
    assert middle[:2].tolist() == [255.0, 255.0] and middle[2] == 0.0  # a 2-pixel white outline
  assert {m for m, _, _ in seen} == set(perturb.MARKERS)
  assert {(t, l) for _, t, l in seen} == {(True, True), (True, False), (False, True),
                                          (False, False)}


def _ruler_mask(edge, height=200, width=400):
  """A ruler 80% of an edge of a 200 x 400 film, by hand: across = round(2.5% of 200) = 5,
  inset = round(3% of 200) = 6; along the top or bottom (400): 320 long from 40, a tick every 16;
  along a side (200): 160 long from 20, a tick every 8; ticks of 5 (k % 5 == 0) or 2, one line
  of 5 // 4 -> 1 pixel."""
  mask = np.zeros((height, width), bool)
  start, step = (40, 16) if edge in ("top", "bottom") else (20, 8)
  base = {"top": 6, "bottom": height - 6 - 5, "left": 6, "right": width - 6 - 5}[edge]
  for k in range(21):
    at, reach = start + k * step, (5 if k % 5 == 0 else 2)
    if edge in ("top", "bottom"):
      mask[base:base + reach + 1, at] = True
    else:
      mask[at, base:base + reach + 1] = True
  if edge in ("top", "bottom"):
    mask[base, start:start + 20 * step + 1] = True
  else:
    mask[start:start + 20 * step + 1, base] = True
  return mask


def test_a_ruler_is_centred_along_a_random_edge_with_its_share_and_its_ticks():
  film = np.zeros((200, 400, 3), np.float32)
  masks = {edge: _ruler_mask(edge) for edge in ("top", "bottom", "left", "right")}
  seen = set()
  for rng in _rngs(20):
    out = perturb.ruler(film, 0.8, rng)
    edge = [e for e, mask in masks.items() if np.array_equal(out[..., 0] == 255.0, mask)]
    assert len(edge) == 1 and np.array_equal(out[..., 0] > 0, out[..., 0] == 255.0)
    seen.add(edge[0])
  assert seen == set(masks)


def _ways(out, film):
  """Which way each random family went, told from a 2 x 2 film of greys 100, 100, 100, 140."""
  if out.shape != film.shape:
    return "letterbox" if out.shape[0] > film.shape[0] else "pillarbox"
  return "up" if out[1, 1, 0] > film[1, 1, 0] else "down"


@pytest.mark.parametrize("name,strength", [("letterbox", 1.6), ("gamma", 2.0), ("contrast", 0.5),
                                           ("brightness", 0.2)])
def test_a_random_way_is_an_even_draw(name, strength):
  """"At random" is a fair coin: of 200 draws each way takes 70 to 130 (100 +- 4.2 sd). (Told by the
  140 grey: gamma 2 lowers it, 1/2 raises it; contrast x2 moves it away from the mean, 110.)"""
  film = _grey([[100.0, 100.0], [100.0, 140.0]])
  apply = FAMILY[name].apply
  draws = [_ways(apply(film, strength, rng), film) for rng in _rngs(200)]
  counts = {way: draws.count(way) for way in set(draws)}
  assert len(counts) == 2 and all(70 <= c <= 130 for c in counts.values()), counts


def test_a_bands_sides_and_colours_are_even_draws():
  """Of 240 draws, each side 60 +- 4 sd (7.1) and each colour 80 +- 4 sd (7.3)."""
  film = np.full((10, 10, 3), 60.0, np.float32)
  sides, colours = [], []
  for rng in _rngs(240):
    out = perturb.band(film, 0.2, rng)
    changed = np.argwhere(out[..., 0] != 60.0)
    rows, columns = set(changed[:, 0]), set(changed[:, 1])
    sides.append("top" if rows == {0, 1} else "bottom" if rows == {8, 9} else
                 "left" if columns == {0, 1} else "right")
    colours.append(float(out[changed[0][0], changed[0][1], 0]))
  assert all(32 <= sides.count(s) <= 88 for s in ("top", "bottom", "left", "right")), sides
  assert all(50 <= colours.count(c) <= 110 for c in perturb.BAND_COLOURS), colours


# Acquisition: either way at random, each way exactly its formula.

def _both_ways(apply, film, strength, ways):
  """The draws of 20 seeds each match exactly one of `ways` (name -> expected), and all occur."""
  seen = set()
  for rng in _rngs(20):
    out = apply(film, strength, rng)
    matches = [name for name, want in ways.items() if np.allclose(out, want, rtol=1e-6, atol=1e-4)]
    assert len(matches) == 1, matches
    seen.add(matches[0])
  assert seen == set(ways)


def test_gamma_raises_greys_to_g_or_one_over_g():
  """A quarter grey, 63.75: to the power 2 it is 255 / 16 = 15.9375, to 1/2 it is 127.5."""
  film = _grey([[0.0, 63.75, 255.0]])
  _both_ways(perturb.gamma, film, 2.0, {"g": _grey([[0.0, 15.9375, 255.0]]),
                                        "1/g": _grey([[0.0, 127.5, 255.0]])})


def test_contrast_scales_deviations_from_the_film_mean_by_factor_or_its_inverse():
  """Greys 100, 100, 100 and 140 (mean 110, over every pixel; the median would be 100) at factor
  0.5: 105 and 125, or (x2) 90 and 170; 0 and 240 (mean 120) x2 clip to 0 and 255."""
  _both_ways(perturb.contrast, _grey([[100.0, 100.0], [100.0, 140.0]]), 0.5,
             {"narrower": _grey([[105.0, 105.0], [105.0, 125.0]]),
              "wider": _grey([[90.0, 90.0], [90.0, 170.0]])})
  _both_ways(perturb.contrast, _grey([[0.0, 240.0]]), 0.5,
             {"narrower": _grey([[60.0, 180.0]]), "wider": _grey([[0.0, 255.0]])})


def test_brightness_moves_every_grey_up_or_down_by_its_share_of_the_range():
  """A shift of 20% is 51 levels: 100 -> 151 or 49; 240 -> 255 (clipped) or 189; 20 -> 71 or 0."""
  _both_ways(perturb.brightness, _grey([[100.0, 240.0, 20.0]]), 0.2,
             {"up": _grey([[151.0, 255.0, 71.0]]), "down": _grey([[49.0, 189.0, 0.0]])})


def test_invert_mirrors_the_greys():
  np.testing.assert_array_equal(perturb.invert(_grey([[0.0, 100.5, 255.0]]), 1, None),
                                _grey([[255.0, 154.5, 0.0]]))


def test_gaussian_noise_has_sd_its_share_of_the_range_the_same_in_every_channel():
  """sd 5% of 255 = 12.75 levels around the film (a mid grey: nothing clipped), zero mean."""
  film = np.full((200, 200, 3), 128.0, np.float32)
  film[..., 0] = 100.0  # a colour film: the same noise is added to each channel
  noise = perturb.gaussian_noise(film, 0.05, np.random.default_rng(0)) - film
  assert np.std(noise) == pytest.approx(12.75, rel=0.02)
  assert abs(np.mean(noise)) < 0.2
  np.testing.assert_allclose(noise[..., 0], noise[..., 1], atol=1e-4)
  np.testing.assert_allclose(noise[..., 1], noise[..., 2], atol=1e-4)


def test_poisson_noise_counts_photons_at_full_white_and_returns_grey():
  """A film whose mean grey is 102 (0.4 of white) at 200 photons: counts of mean 80, each worth
  255 / 200 = 1.275 levels; mean 102 kept, variance 80 counts = 102 * 255 / 200 = 130.05 levels^2.
  Colour in, grey out (the counts are of the pixel's mean grey)."""
  film = np.empty((200, 200, 3), np.float32)
  film[..., 0], film[..., 1], film[..., 2] = 60.0, 102.0, 144.0
  out = perturb.poisson_noise(film, 200, np.random.default_rng(0))
  assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
  counts = out[..., 0] * 200 / 255.0
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)  # whole photons
  assert np.mean(out) == pytest.approx(102.0, abs=0.3)
  assert np.var(out) == pytest.approx(130.05, rel=0.03)
  # Fewer photons, more noise: at 50 the variance is 102 * 255 / 50 = 520.2.
  assert np.var(perturb.poisson_noise(film, 50, np.random.default_rng(0))) == pytest.approx(
      520.2, rel=0.03)


def test_blur_is_scipys_gaussian_with_sigma_its_share_of_the_shorter_side():
  """A 60 x 100 film at 5%: sigma 3 pixels in both directions (60 * 0.05), none across the
  channels, edges extended."""
  rng = np.random.default_rng(0)
  film = rng.uniform(0, 255, (60, 100, 3)).astype(np.float32)
  want = ndimage.gaussian_filter(film, (3.0, 3.0, 0), mode="nearest")
  np.testing.assert_allclose(perturb.blur(film, 0.05, None), want, rtol=0, atol=1e-3)
  # The family's severe strength on a 250 x 500 film: 0.012 * 250 = sigma 3 again.
  tall = rng.uniform(0, 255, (500, 250, 3)).astype(np.float32)
  np.testing.assert_allclose(perturb.blur(tall, 0.012, None),
                             ndimage.gaussian_filter(tall, (3.0, 3.0, 0), mode="nearest"),
                             rtol=0, atol=1e-3)


def test_downsampling_averages_boxes_of_its_factor_and_interpolates_back():
  """Columns striped 2 black, 2 white on an 8 x 16 film. Down by 2 (2 x 2 boxes: 0, 255, 0, ...)
  and back up bilinearly: an inner pixel lies a quarter of the way to its neighbour box, so 0 ->
  63.75 and 255 -> 191.25, the outermost columns keep theirs. Down by 4, every box averages 127.5:
  flat. The green channel, flat 90, stays 90."""
  film = np.zeros((8, 16, 3), np.float32)
  film[:, 2::4, 0], film[:, 3::4, 0] = 255.0, 255.0
  film[..., 1:] = 90.0
  row = [0.0] + [63.75, 191.25, 191.25, 63.75] * 3 + [63.75, 191.25, 255.0]
  out = perturb.downsample(film, 2, None)
  np.testing.assert_allclose(out[..., 0], np.tile(row, (8, 1)), atol=1e-3)
  np.testing.assert_allclose(out[..., 1:], 90.0, atol=1e-3)
  np.testing.assert_allclose(perturb.downsample(film, 4, None)[..., 0], 127.5, atol=1e-3)
  # A 13 x 11 film at 1/4: 3.25 -> 3 rows and 2.75 -> 3 columns of boxes (rounded, not
  # truncated), then back to 13 x 11; as Pillow does it on each channel.
  odd = np.random.default_rng(0).uniform(0, 255, (13, 11, 3)).astype(np.float32)
  want = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(odd[..., c]), "F")
                              .resize((3, 3), Image.Resampling.BOX)
                              .resize((11, 13), Image.Resampling.BILINEAR)) for c in range(3)], -1)
  np.testing.assert_allclose(perturb.downsample(odd, 4, None), want, atol=1e-4)
  # A 3 x 3 film at 1/8 is one box (at least one pixel): the mean of 0..8, 4, everywhere.
  tiny = _grey(np.arange(9, dtype=np.float32).reshape(3, 3))
  np.testing.assert_allclose(perturb.downsample(tiny, 8, None), 4.0, atol=1e-4)


def test_jpeg_is_pillows_at_exactly_that_quality_of_the_rounded_film():
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:48, 0:64]
  film = _grey(np.clip(120 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0)
                       + rng.uniform(-20, 20, (48, 64)), 0, 255) + 0.4)

  def pillow(quality):
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(film), 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"), np.float32)

  out = perturb.jpeg(film, 50, None)
  assert out.dtype == np.float32 and out.shape == film.shape
  np.testing.assert_array_equal(out, pillow(50))
  assert not np.array_equal(out, pillow(49)) and not np.array_equal(out, pillow(51))
  np.testing.assert_array_equal(perturb.jpeg(film, 20.0, None), pillow(20))
