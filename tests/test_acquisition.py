"""Acquisition augmentation (`config.augment.framing`, `.overlays`, `.intensity`): seeded draws,
each group doing what it says, the paper's config untouched, and the stress test's own strings."""

import numpy as np
import pytest

from radjax.data import acquisition, augment, perturb
from radjax.errors import UserError
from radjax.training import config as config_lib

SIZE = 96


def _config(framing=0.0, overlays=0.0, intensity=0.0, **extra):
  config = config_lib.default_config()
  config.augment.framing.probability = framing
  config.augment.overlays.probability = overlays
  config.augment.intensity.probability = intensity
  for name, value in extra.items():
    group, field = name.split("__")
    config.augment[group][field] = value
  return config.augment


@pytest.fixture(scope="module")
def film():
  rng = np.random.default_rng(0)
  return rng.uniform(40, 200, (SIZE, SIZE, 1)).astype(np.float32)


def _params(**values):
  p = np.zeros(acquisition.WIDTH, np.float32)
  p[acquisition.PARAMS.index("gamma")] = p[acquisition.PARAMS.index("contrast")] = 1.0
  for name, value in values.items():
    p[acquisition.PARAMS.index(name)] = value
  return p


def test_off_by_default_so_the_papers_transforms_are_unchanged():
  config = config_lib.load_config("hello_world", [], device_count=1)
  assert not acquisition.active(config.augment)
  rows = augment.epoch_transforms(0, 3, 10, config.augment, 299, 299)
  assert rows.shape == (10, augment.AFFINE_WIDTH)
  # Turning acquisition on appends its draws and leaves the affine ones as they were.
  on = _config(framing=0.5)
  with_acquisition = augment.epoch_transforms(0, 3, 10, on, 299, 299)
  np.testing.assert_array_equal(with_acquisition[:, :augment.AFFINE_WIDTH], rows)


def test_draws_are_a_function_of_seed_and_epoch_and_follow_the_probabilities():
  config = _config(framing=0.3, overlays=0.6, intensity=0.9)
  a = acquisition.epoch_params(0, 1, 2000, config, SIZE)
  np.testing.assert_array_equal(a, acquisition.epoch_params(0, 1, 2000, config, SIZE))
  assert not np.array_equal(a, acquisition.epoch_params(0, 2, 2000, config, SIZE))
  # Row i does not depend on how many rows were drawn (a preview draws one, an epoch all).
  np.testing.assert_array_equal(acquisition.epoch_params(0, 1, 7, config, SIZE), a[:7])
  at = {n: a[:, i] for i, n in enumerate(acquisition.PARAMS)}
  framed = (a[:, 1:5] > 0).any(axis=1) | (at["frame_kind"] > 0)
  assert framed.mean() == pytest.approx(0.3, abs=0.04)
  assert at["overlay_on"].mean() == pytest.approx(0.6, abs=0.04)
  assert (at["gamma"] != 1).mean() == pytest.approx(0.9, abs=0.04)
  assert a[:, 1:5].max() <= 0.25 and a[:, 1:5][a[:, 1:5] > 0].min() >= acquisition.MIN_BAND
  assert at["gamma"].min() >= 1 / 1.5 - 1e-6 and at["gamma"].max() <= 1.5 + 1e-6
  # Turning one group on does not move the others' draws.
  alone = acquisition.epoch_params(0, 1, 2000, _config(overlays=0.6), SIZE)
  overlay = slice(acquisition.PARAMS.index("overlay_on"), acquisition.PARAMS.index("gamma"))
  np.testing.assert_array_equal(alone[:, overlay], a[:, overlay])


def test_a_top_band_covers_its_share_of_the_rows_in_its_grey(film):
  config = _config(framing=1.0)
  out = acquisition.apply(np, film, _params(band_grey=17.0, band_top=0.25, band_right=0.1), config)
  # 0.25 x 96 = 24 rows; columns from 96 - 9.6 = 86.4 on: 87..95, 9 of them.
  assert np.all(out[:24] == 17.0) and np.all(out[:, -9:] == 17.0)
  np.testing.assert_array_equal(out[24:, :-9], film[24:, :-9])


def test_a_pad_shrinks_the_film_into_its_box_and_a_crop_enlarges_its_box(film):
  config = _config(framing=1.0)
  box = {"frame_top": 10.0, "frame_left": 5.0, "frame_height": 48.0, "frame_width": 80.0}
  padded = acquisition.apply(np, film, _params(frame_kind=1.0, band_grey=7.0, **box), config)
  inside = np.zeros((SIZE, SIZE), bool)
  inside[10:58, 5:85] = True
  assert np.all(padded[~inside] == 7.0)
  rows, columns = np.arange(48) * SIZE // 48, np.arange(80) * SIZE // 80  # every 2nd row
  np.testing.assert_array_equal(padded[10:58, 5:85], film[rows][:, columns])
  cropped = acquisition.apply(np, film, _params(frame_kind=2.0, **box), config)
  rows, columns = 10 + np.arange(SIZE) * 48 // SIZE, 5 + np.arange(SIZE) * 80 // SIZE
  np.testing.assert_array_equal(cropped, film[rows][:, columns])
  # Drawn: bands, pads and crops alike among the framed films; bands only on band draws.
  p = acquisition.epoch_params(0, 1, 3000, config, SIZE)
  kind = p[:, acquisition.PARAMS.index("frame_kind")]
  assert [np.mean(kind == k) for k in (0, 1, 2)] == pytest.approx([1 / 3] * 3, abs=0.03)
  assert not p[kind > 0, 1:5].any() and p[kind == 0, 1:5].any(axis=1).all()


def test_intensity_does_what_each_number_says(film):
  config = _config(intensity=1.0)
  gamma = acquisition.apply(np, film, _params(gamma=2.0), config)
  np.testing.assert_allclose(gamma, 255 * (film / 255) ** 2, rtol=1e-5)
  brighter = acquisition.apply(np, film, _params(brightness=0.1), config)
  np.testing.assert_allclose(brighter, film + 25.5, atol=1e-3)  # nothing clipped: film < 230
  flat = acquisition.apply(np, film, _params(contrast=0.5), config)
  assert np.std(flat) == pytest.approx(np.std(film) * 0.5, rel=1e-4)
  noisy = acquisition.apply(np, film, _params(noise=0.04, noise_seed=7.0), config)
  assert np.std(noisy - film) == pytest.approx(0.04 * 255, rel=0.05)
  again = acquisition.apply(np, film, _params(noise=0.04, noise_seed=8.0), config)
  assert not np.allclose(noisy, again)  # another seed, other noise
  blurred = acquisition.apply(np, film, _params(blur=1.0), config)
  assert np.abs(np.diff(blurred[..., 0], axis=1)).mean() < 0.6 * np.abs(
      np.diff(film[..., 0], axis=1)).mean()
  np.testing.assert_allclose(acquisition.apply(np, film, _params(), config), film, atol=1e-3)


def test_an_overlay_is_a_sprite_of_the_bank_in_light_grey(film):
  config = _config(overlays=1.0)
  bank = acquisition.sprite_bank(SIZE)
  assert bank.shape[1:] == (SIZE // 2, SIZE // 2) and len(bank) == 30
  out = acquisition.apply(np, film, _params(overlay_on=1.0, sprite=3.0, overlay_x=0.0,
                                            overlay_y=1.0, overlay_grey=250.0), config)
  alpha = bank[3]
  want = film[SIZE // 2:, :SIZE // 2, 0] * (1 - alpha) + 250.0 * alpha  # bottom left
  np.testing.assert_allclose(out[SIZE // 2:, :SIZE // 2, 0], want, rtol=1e-5)
  np.testing.assert_array_equal(out[:SIZE // 2], film[:SIZE // 2])
  off = acquisition.apply(np, film, _params(overlay_on=0.0, sprite=3.0, overlay_grey=250.0),
                          config)
  np.testing.assert_array_equal(off, film)


def test_training_draws_other_strings_markers_and_colours_than_the_stress_test():
  rng = np.random.default_rng(acquisition.BANK_SEED)
  assert not set(acquisition.TRAINING_MARKERS) & set(perturb.MARKERS)
  tokens = ["".join(rng.choice(list(acquisition.TOKEN_CHARACTERS), rng.integers(3, 9)))
            for _ in range(acquisition.TEXT_TOKENS)]
  assert not any(token in line for token in tokens for line in perturb.TEXT_LINES)
  # Training bands take any grey; the stress test's are exactly black, white or mid-grey.
  greys = acquisition.epoch_params(0, 1, 500, _config(framing=1.0), SIZE)[:, 0]
  assert not np.isin(greys, perturb.BAND_COLOURS).any()


@pytest.mark.parametrize("name,value,why", [
    ("augment.framing.probability", "1.5", "expected a probability, 0 <= p <= 1"),
    ("augment.overlays.probability", "-0.1", "expected a probability, 0 <= p <= 1"),
    ("augment.framing.max_fraction", "0.6", "expected 0 <= fraction <= 0.45"),
    ("augment.intensity.gamma", "0.5", "expected a number >= 1"),
    ("augment.intensity.noise", "2", "expected 0 <= value <= 1"),
    ("augment.intensity.blur", "20", "expected 0 <= sigma <= 8.0 pixels"),
    ("augment.intensity.blur", "-1", "expected 0 <= sigma <= 8.0 pixels"),
    ("augment.intensity.probability", "nan", "expected a probability, 0 <= p <= 1"),
    ("augment.framing.max_fraction", "-0.1", "expected 0 <= fraction <= 0.45"),
    ("augment.intensity.gamma", "inf", "expected a number >= 1"),
    ("augment.intensity.contrast", "-0.2", "expected 0 <= value <= 1"),
    ("augment.intensity.brightness", "1.5", "expected 0 <= value <= 1"),
])
def test_bad_acquisition_settings_are_one_line(name, value, why):
  with pytest.raises(UserError) as e:
    config_lib.load_config("smoke", [f"--config.{name}={value}"], device_count=1)
  assert str(e.value).startswith(f"--config.{name}=")
  assert why in str(e.value) and "\n" not in str(e.value)
