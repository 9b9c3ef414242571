"""Border cropping (`config.crop_borders`): known margins removed exactly, films without one
unchanged, and every consumer decoding through the same crop."""

import numpy as np
import pytest
from PIL import Image

from radjax.data import borders, preprocess
from radjax.training import config as config_lib


def _film(height=120, width=100, seed=0):
  """Uniform noise in [30, 230]: no row or column of it is near-uniform."""
  rng = np.random.default_rng(seed)
  return np.repeat(rng.uniform(30, 230, (height, width, 1)), 3, axis=-1).astype(np.float32)


def _framed(film, top=0, bottom=0, left=0, right=0, value=0.0, noise=0.0, seed=1):
  """`film` inside margins of `value` (+- `noise`) of the given widths."""
  height, width = film.shape[0] + top + bottom, film.shape[1] + left + right
  rng = np.random.default_rng(seed)
  out = np.clip(value + rng.uniform(-noise, noise, (height, width, 1)), 0, 255)
  out = np.repeat(out, 3, axis=-1).astype(np.float32)
  out[top:top + film.shape[0], left:left + film.shape[1]] = film
  return out


@pytest.mark.parametrize("margins,value,noise", [
    ({"top": 12}, 0.0, 0.0),                        # a black band across the top
    ({"left": 9, "right": 9}, 255.0, 0.0),          # white pillarbox
    ({"top": 15, "bottom": 15}, 128.0, 6.0),        # grey letterbox with scanner noise
    ({"top": 4, "bottom": 7, "left": 3, "right": 11}, 10.0, 3.0),  # a shutter on every side
])
def test_known_margins_are_removed_exactly(margins, value, noise):
  film = _film()
  framed = _framed(film, value=value, noise=noise, **margins)
  top, bottom, left, right = (margins.get(k, 0) for k in ("top", "bottom", "left", "right"))
  assert borders.border_box(framed) == (top, framed.shape[0] - bottom, left,
                                        framed.shape[1] - right)
  np.testing.assert_array_equal(borders.crop_borders(framed, "auto"), film)
  assert borders.crop_borders(framed, "off") is framed


def test_a_letterbox_and_a_pillarbox_of_other_colours_both_go():
  """The second pass: black bars top and bottom, then white bars beside the film."""
  film = _film()
  inner = _framed(film, left=6, right=6, value=255.0)
  framed = _framed(inner, top=10, bottom=10, value=0.0)
  np.testing.assert_array_equal(borders.crop_borders(framed, "auto"), film)


def test_a_noisy_margin_goes_too_up_to_a_few_rows():
  """Detector noise of sd 13 grey levels (5% of the range, over the tolerance) on a black band:
  found on the averaged film, cut within SMOOTHING // 2 rows of the film."""
  film = _film()
  framed = _framed(film, top=30, value=20.0)
  framed[:30] += np.random.default_rng(2).normal(0, 13, (30, 100, 1)).astype(np.float32)
  top = borders.border_box(framed)[0]
  assert 30 - borders.SMOOTHING // 2 <= top <= 30


def test_films_without_a_margin_are_unchanged():
  film = _film()
  assert borders.border_box(film) == (0, 120, 0, 100)
  np.testing.assert_array_equal(borders.crop_borders(film, "auto"), film)
  flat = np.full((50, 40, 3), 17.0, np.float32)  # nothing but margin: kept whole
  assert borders.border_box(flat) == (0, 50, 0, 40)


def test_a_band_with_burned_in_text_is_kept_and_a_side_loses_at_most_its_limit():
  film = _film()
  framed = _framed(film, top=20)
  framed[2:10, 5:60] = 255.0  # a line of "text" in the band: not a uniform margin
  assert borders.border_box(framed)[0] == 2  # the rows above the text go; the text stays
  huge = _framed(film, top=200)  # 62% of the height is black: cropped to the limit only
  assert borders.border_box(huge)[0] == int(huge.shape[0] * borders.MAX_SIDE_FRACTION) == 96


def test_decode_crops_for_every_consumer(tmp_path):
  """`preprocess.decode` is what training, evaluate, predict, explain and prepare read through."""
  film = _film()
  framed = _framed(film, top=12, right=7, value=0.0)
  path = tmp_path / "framed.png"
  Image.fromarray(framed.round().astype(np.uint8)).save(path)
  config = config_lib.default_config()
  assert preprocess.decode(path, config).shape == (132, 107, 3)
  config.crop_borders = "auto"
  np.testing.assert_array_equal(preprocess.decode(path, config), film.round())


def test_a_bad_crop_setting_is_one_line():
  from radjax.errors import UserError

  with pytest.raises(UserError, match=r"^--config.crop_borders=sometimes: expected one of off, auto$"):
    config_lib.load_config("smoke", ["--config.crop_borders=sometimes"], device_count=1)


# Each threshold at its boundary, worked out by hand on `_film`'s noise (no row or column of it
# is near-uniform, as it is or averaged).

def _grey(values):
  return np.repeat(np.asarray(values, np.float32)[..., None], 3, axis=-1)


def _on_every_side(framed, box):
  """`framed` (its margin on top) with that margin moved to each side, and the box each should
  give: flipped upside down (bottom), transposed (left), transposed and mirrored (right)."""
  height = framed.shape[0]
  top, bottom, left, right = box
  turned = framed.transpose(1, 0, 2)
  yield "top", framed, box
  yield "bottom", framed[::-1], (height - bottom, height - top, left, right)
  yield "left", turned, (left, right, top, bottom)
  yield "right", turned[:, ::-1], (left, right, height - bottom, height - top)


def _assert_on_every_side(framed, box):
  for side, image, want in _on_every_side(framed, box):
    assert borders.border_box(np.ascontiguousarray(image)) == want, side


@pytest.mark.parametrize("step,top", [(borders.TOLERANCE, 15), (borders.TOLERANCE + 1, 7)])
def test_a_margin_row_may_differ_by_tolerance_levels_and_not_one_more(step, top):
  """5 black rows, then 10 rows whose left 70 columns are `step` levels lighter. At 12 levels
  all 15 rows are margin; at 13 the lighter rows are not (as they are), and averaged over 5 x 5
  only the first two of them are (7.8 and 10.4 levels); the second pass, starting at row 7, sees
  a row 70% lighter and 30% darker: no margin either."""
  film = _film()
  framed = _framed(film, top=15)
  framed[5:15, :70] = step
  _assert_on_every_side(framed, (top, 135, 0, 100))


@pytest.mark.parametrize("level,box", [(borders.TOLERANCE, (0, 50, 0, 40)),
                                       (borders.TOLERANCE + 1, (15, 35, 12, 28))])
def test_a_film_within_tolerance_throughout_is_kept_whole_and_one_level_more_is_not(level, box):
  """A 50 x 40 checkerboard of 0 and `level`: within 12 levels it is all margin, so kept whole;
  at 13 every row and column lies within 6.5 of its median (the middle of 0 and 13): each side is
  cut to its limit, int(30% of 50) = 15 rows and int(30% of 40) = 12 columns."""
  board = np.zeros((50, 40))
  board[::2, ::2] = board[1::2, 1::2] = level
  assert borders.border_box(_grey(board)) == box


@pytest.mark.parametrize("line,top", [(2, 20), (3, 0)])
def test_a_row_with_98_percent_matching_pixels_is_margin_and_97_is_not(line, top):
  """A thin white line down a 20-row black band 100 wide: 2 pixels of each row (98% match) do not
  stop the margin; 3 pixels (97%) do, and averaged over 5 columns the line spreads to 7 (93%)."""
  framed = _framed(_film(), top=20)
  framed[:20, 40:40 + line] = 255.0
  _assert_on_every_side(framed, (top, 140, 0, 100))


def test_the_edges_reference_is_its_median_which_a_thin_line_does_not_move():
  """The first 3 rows are grey 12 but for a 2-pixel white line (their median: 12; their mean
  would be 16.86); below, 17 rows of 0 on the left 60 columns and 24 on the right 40: every pixel
  within 12 of the median, so all 20 rows are margin (of the mean, 0 is not)."""
  framed = _framed(_film(), top=20)
  framed[:3] = 12.0
  framed[:3, 40:42] = 255.0
  framed[3:20, 60:] = 24.0
  _assert_on_every_side(framed, (20, 140, 0, 100))


@pytest.mark.parametrize("stripes,top", [(45.0, 28), (60.0, 28), (61.0, 0)])
def test_a_margin_flat_only_once_averaged_over_5_x_5_goes_up_to_2_rows_short(stripes, top):
  """A 30-row grey band whose columns alternate 100 + d and 100 - d over a film 200 wide: as it
  is, no row is within 12 of its median (100). Averaged over 5 columns, every column but the two
  outermost is 100 +- d / 5: within 12 for d = 45 and 60 (over 3 columns, d / 3 = 15 would not
  be), not for 61 (12.2). Rows 28 and 29 average in the film's first row: not margin."""
  framed = _framed(_film(width=200), top=30, value=100.0)
  framed[:30, 0::2] += stripes
  framed[:30, 1::2] -= stripes
  _assert_on_every_side(framed, (top, 150, 0, 200))


def test_a_side_loses_at_most_30_percent_rounded_down_across_both_passes():
  film = _film(height=76)
  # 136 rows, 60 of them black: int(40.8) = 40 go, not 41.
  assert borders.border_box(_framed(film, top=60)) == (40, 136, 0, 100)
  # Columns have their own limit: 200 columns, 100 black on the right, int(60.0) = 60 go.
  assert borders.border_box(_framed(_film(), right=100)) == (0, 120, 0, 140)
  # A margin of exactly the limit goes whole, and the film is left alone.
  np.testing.assert_array_equal(borders.crop_borders(_framed(film, bottom=32), "auto"), film)
  # 20 black rows, then 25 white ones over a 100-row film (145 rows, limit int(43.5) = 43): the
  # first pass cuts the 20 black ones, the second only 23 of the white ones, to 43 in all.
  framed = _framed(_film(height=100), top=45)
  framed[20:45] = 255.0
  assert borders.border_box(framed) == (43, 145, 0, 100)


def test_a_pillarbox_inside_a_letterbox_on_every_side_needs_the_second_pass():
  """Black bars 8 above and 5 below, grey bars 7 left and 4 right of the film inside them: the
  first pass cuts the black rows (the grey columns run into black ones, so are not uniform), the
  second the grey columns."""
  film = _film()
  inner = _framed(film, left=7, right=4, value=128.0)
  framed = _framed(inner, top=8, bottom=5, value=0.0)
  assert borders.border_box(framed) == (8, 128, 7, 107)
  # Turned a quarter, the rows' and the columns' roles swap and so does the box.
  turned = np.ascontiguousarray(framed.transpose(1, 0, 2))
  assert borders.border_box(turned) == (7, 107, 8, 128)


# Bad inputs: `crop_borders="auto"` on any decoded film is sane.

@pytest.mark.parametrize("shape", [(50, 40), (3, 3), (1, 500), (500, 1), (1, 1), (2, 2)])
@pytest.mark.parametrize("grey", [0.0, 255.0, 77.0])
def test_a_film_of_one_colour_is_returned_whole(shape, grey):
  flat = np.full(shape + (3,), grey, np.float32)
  assert borders.border_box(flat) == (0, shape[0], 0, shape[1])
  np.testing.assert_array_equal(borders.crop_borders(flat, "auto"), flat)


@pytest.mark.parametrize("shape", [(3, 3), (2, 2), (1, 1), (3, 7)])
def test_a_film_of_three_rows_or_fewer_keeps_every_row(shape):
  """int(30% of 3) = 0: no side of a film so small may lose a row, whatever it shows."""
  film = np.zeros(shape + (3,), np.float32)
  film[-1, -1] = 255.0  # one bright pixel: not uniform throughout, all else a black margin
  top, bottom, left, right = borders.border_box(film)
  assert (top, bottom) == (0, shape[0])
  assert right - left >= shape[1] - 2 * int(shape[1] * borders.MAX_SIDE_FRACTION) >= 1


def test_a_one_pixel_high_or_wide_film_is_cropped_within_its_limits_only():
  """1 x 500: 100 black columns, then noise. The black ones go (up to 2 more, whose local
  means lie within 12 of their neighbour's); no row can go (int(0.3) = 0), and no side more
  than 150 columns: never to nothing. 500 x 1 is the same film turned."""
  rng = np.random.default_rng(0)
  row = np.concatenate([np.zeros(100), rng.uniform(30, 230, 400)])
  wide = _grey(row[None])
  top, bottom, left, right = borders.border_box(wide)
  assert (top, bottom) == (0, 1) and 100 <= left <= 102 and 500 - 150 <= right <= 500
  assert borders.crop_borders(wide, "auto").shape == (1, right - left, 3)
  tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
  assert borders.border_box(tall) == (left, right, top, bottom)


def test_real_text_burned_into_a_margin_band_is_kept():
  """Pillow's font, 14 pixels, "ID 4821937" at row 8 of a 30-row black band: its glyph rows 12 to
  21 each cover a third or more of the row (over 2%): the crop stops at its first row, keeping
  the text and the band below it."""
  from PIL import ImageDraw, ImageFont

  framed = _framed(_film(), top=30)
  mask = Image.new("L", (100, 150), 0)
  ImageDraw.Draw(mask).text((4, 8), "ID 4821937", font=ImageFont.load_default(size=14), fill=255)
  alpha = np.asarray(mask, np.float32)[..., None] / 255.0
  framed = framed * (1 - alpha) + 255.0 * alpha
  inked = np.flatnonzero(alpha[..., 0].any(axis=1))
  assert (inked.min(), inked.max()) == (12, 21)
  assert borders.border_box(framed) == (12, 150, 0, 100)
  np.testing.assert_array_equal(borders.crop_borders(framed, "auto"), framed[12:])


def test_a_margin_is_judged_on_the_grey_of_every_channel():
  """Green text (0, 255, 0: grey 85) over rows 2-9 of a black band is text, though the band's red
  channel is black throughout; and a band of dark blue (0, 0, 30: grey 10) is a margin."""
  framed = _framed(_film(), top=20)
  framed[2:10, 5:60, 1] = 255.0
  assert borders.border_box(framed)[0] == 2
  framed = _framed(_film(), top=20)
  framed[1:20, :, 2] = 30.0  # below a black first row: 10 levels off, within tolerance
  assert borders.border_box(framed)[0] == 20
