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
