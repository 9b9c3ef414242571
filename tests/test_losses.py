"""Losses and batch mixing: hand-computed values, their equalities, and the train step that uses
them (on a tiny model, so the numbers can be worked out; InceptionV3's steps use the same code)."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from radjax.configs import default
from radjax.data import device_augment
from radjax.errors import UserError
from radjax.training import config as config_lib, losses, mixing, steps

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def settings(**values):
  config = default.get_config()
  config.update(values)
  return ml_collections.FrozenConfigDict(config)


def test_cross_entropy_by_hand_for_each_task():
  plain = settings()
  # binary: -log sigmoid(0) = ln 2; a logit of 2 for a negative: log(1 + e^2)
  got = losses.cross_entropy(jnp.array([0.0, 2.0]), jnp.array([1, 0]), plain)
  np.testing.assert_allclose(got, [LN2, math.log1p(math.e ** 2)], rtol=1e-6)
  # multiclass: p = (1/4, 1/2, 1/4), label 1: ln 2
  logits = jnp.log(jnp.array([[1.0, 2.0, 1.0]]))
  np.testing.assert_allclose(losses.cross_entropy(logits, jnp.array([1]), plain), [LN2], rtol=1e-6)
  # multilabel: labels 1, unknown, 0 at logits 0, 5, ln 3: the mean of ln 2 and ln 4
  got = losses.cross_entropy(jnp.array([[0.0, 5.0, LN3]]), jnp.array([[1, -1, 0]]), plain)
  np.testing.assert_allclose(got, [(LN2 + LN4) / 2], rtol=1e-6)
  # an image with no known label weighs nothing
  assert float(losses.cross_entropy(jnp.zeros((1, 3)), jnp.full((1, 3), -1), plain)[0]) == 0.0


def test_label_smoothing_by_hand():
  smooth = settings(label_smoothing=0.1)
  # binary targets 0.95 / 0.05: at logit 2 for a negative, 0.05 * log(1 + e^-2) + 0.95 * log(1 + e^2)
  want = 0.05 * math.log1p(math.e ** -2) + 0.95 * math.log1p(math.e ** 2)
  got = losses.cross_entropy(jnp.array([0.0, 2.0]), jnp.array([1, 0]), smooth)
  np.testing.assert_allclose(got, [LN2, want], rtol=1e-6)
  # multiclass with e = 0.3: targets (0.1, 0.8, 0.1) on p = (1/4, 1/2, 1/4)
  logits = jnp.log(jnp.array([[1.0, 2.0, 1.0]]))
  want = 0.2 * LN4 + 0.8 * LN2
  np.testing.assert_allclose(losses.cross_entropy(logits, jnp.array([1]),
                                                  settings(label_smoothing=0.3)), [want], rtol=1e-6)
  # multilabel: each known label a two-class smoothing; unknown still nothing
  got = losses.cross_entropy(jnp.array([[0.0, 5.0, LN3]]), jnp.array([[1, -1, 0]]), smooth)
  negative = 0.05 * math.log(4 / 3) + 0.95 * LN4
  np.testing.assert_allclose(got, [(LN2 + negative) / 2], rtol=1e-6)


def test_focal_by_hand():
  focal = settings(loss="focal", focal_gamma=2.0)
  # binary: p = 1/2 -> (1/2)^2 ln 2; p = 3/4 right -> (1/4)^2 ln(4/3); wrong -> (3/4)^2 ln 4
  got = losses.focal(jnp.array([0.0, LN3, LN3]), jnp.array([1, 1, 0]), focal)
  np.testing.assert_allclose(got, [0.25 * LN2, 0.0625 * math.log(4 / 3), 0.5625 * LN4], rtol=1e-5)
  # multiclass: p(label) = 1/2 -> (1/2)^2 ln 2
  logits = jnp.log(jnp.array([[1.0, 2.0, 1.0]]))
  np.testing.assert_allclose(losses.focal(logits, jnp.array([1]), focal), [0.25 * LN2], rtol=1e-5)
  # multilabel: the known labels' mean
  got = losses.focal(jnp.array([[0.0, 5.0, LN3]]), jnp.array([[1, -1, 0]]), focal)
  np.testing.assert_allclose(got, [(0.25 * LN2 + 0.5625 * LN4) / 2], rtol=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_focal_with_gamma_0_is_cross_entropy_for_every_task(smoothing):
  rng = np.random.default_rng(0)
  ce = settings(label_smoothing=smoothing)
  focal = settings(loss="focal", focal_gamma=0.0, label_smoothing=smoothing)
  cases = [(rng.normal(0, 3, 8), rng.integers(0, 2, 8)),                 # binary
           (rng.normal(0, 3, (8, 4)), rng.integers(0, 4, 8)),           # multiclass
           (rng.normal(0, 3, (8, 3)), rng.integers(-1, 2, (8, 3)))]     # multilabel
  for logits, labels in cases:
    logits, labels = jnp.asarray(logits, jnp.float32), jnp.asarray(labels)
    np.testing.assert_allclose(losses.focal(logits, labels, focal),
                               losses.cross_entropy(logits, labels, ce), rtol=1e-5, atol=1e-6)


def test_the_paper_loss_is_optax_binary_cross_entropy_bit_for_bit():
  logits, labels = jnp.array([-3.0, 0.5, 7.0]), jnp.array([1, 0, 1])
  want = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
  assert np.array_equal(losses.cross_entropy(logits, labels, settings()), want)
  assert np.array_equal(losses.cross_entropy(logits, labels), want)  # the train step's default


def own_loss(logits, labels, config):
  """A researcher's loss, found by `--config.loss=test_losses:own_loss`."""
  return config.label_smoothing + jnp.abs(logits - labels)


def test_config_loss_names_a_radjax_loss_or_any_importable_function():
  assert losses.resolve("focal") is losses.focal
  assert losses.resolve("test_losses:own_loss") is own_loss
  for bad, why in [("hinge", "not a radjax loss"), ("resolve", "not a radjax loss"),
                   ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
                   ("test_losses:missing", "has no function missing")]:
    with pytest.raises(UserError, match=why):
      losses.resolve(bad)


@pytest.mark.parametrize("setting, message", [
    ("--config.loss=hinge", "--config.loss=hinge: not a radjax loss"),
    ("--config.label_smoothing=1.0", "label_smoothing=1.0: expected 0 <= smoothing < 1"),
    ("--config.focal_gamma=-1.0", "focal_gamma=-1.0: must be a number >= 0"),
    ("--config.mixup_alpha=nan", "mixup_alpha=nan: must be a number >= 0"),
    ("--config.cutmix_alpha=1.0", "mixup .* and cutmix both on: use one of them"),
])
def test_bad_loss_and_mixing_settings_are_one_line_errors(setting, message):
  overrides = [setting] + (["--config.mixup_alpha=0.2"] if "cutmix" in setting else [])
  with pytest.raises(UserError, match=message) as error:
    config_lib.load_config("smoke", overrides, device_count=1)
  assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------
# Mixing
# ------------------------------------------------------------------------------------------------

def test_box_edges_round_and_clip_by_hand():
  assert [int(v) for v in mixing.box_edges(5.0, 4.0, 8)] == [3, 7]
  assert [int(v) for v in mixing.box_edges(1.0, 4.0, 8)] == [0, 3]   # -1 clipped to 0
  assert [int(v) for v in mixing.box_edges(7.5, 3.0, 8)] == [6, 8]   # 9 clipped to 8


def _constant_images(n=6, size=16):
  """Image i is the constant i + 1 (so every pixel says whose it is)."""
  return jnp.broadcast_to(jnp.arange(1.0, n + 1)[:, None, None, None], (n, size, size, 1))


def test_mixup_blends_each_image_with_its_partner():
  images = _constant_images()
  mixed = mixing.mixup(images, jax.random.key(3), alpha=0.4)
  perm, lam = np.asarray(mixed.permutation), float(mixed.lam)
  assert sorted(perm) == list(range(6)) and 0 < lam < 1
  want = lam * np.arange(1, 7) + (1 - lam) * (perm + 1)
  np.testing.assert_allclose(np.asarray(mixed.images)[:, 0, 0, 0], want, rtol=1e-6)
  assert np.ptp(np.asarray(mixed.images), axis=(1, 2, 3)).max() < 1e-6  # still constant


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_lam_is_the_share_of_pixels_an_image_keeps(seed):
  images = _constant_images()
  mixed = mixing.cutmix(images, jax.random.key(seed), alpha=1.0)
  perm, lam, out = np.asarray(mixed.permutation), float(mixed.lam), np.asarray(mixed.images)
  for i in range(6):
    own = np.mean(out[i] == i + 1) if perm[i] != i else 1.0
    partner = np.mean(out[i] == perm[i] + 1)
    if perm[i] != i:
      assert own == pytest.approx(lam) and own + partner == pytest.approx(1.0)
  # one box for the whole batch: the same pixels come from the partner in every image
  moved = [out[i, ..., 0] != i + 1 for i in range(6) if perm[i] != i]
  assert all(np.array_equal(moved[0], m) for m in moved)


def test_no_alpha_no_mixing():
  assert mixing.from_config(settings()) is None and mixing.describe(settings()) is None
  assert mixing.from_config(settings(mixup_alpha=0.3)) is not None
  assert "cutmix, alpha 1.0" in mixing.describe(settings(cutmix_alpha=1.0))


class Tiny(nn.Module):
  """Pooling, BatchNorm, dropout and a dense layer: what the train step needs of a model."""
  num_outputs: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.BatchNorm(use_running_average=not train)(jnp.mean(x, axis=(1, 2)))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = nn.Dense(self.num_outputs)(x)
    return x[:, 0] if self.num_outputs == 1 else x


def _hand_cross_entropy(logits, labels):
  """Per-example cross-entropy in float64 NumPy (binary, multiclass, multilabel)."""
  logits = np.asarray(logits, np.float64)
  if labels.ndim == 2:
    per = np.logaddexp(0, logits) - (labels == 1) * logits
    known = labels >= 0
    return np.sum(np.where(known, per, 0), 1) / np.maximum(known.sum(1), 1)
  if logits.ndim == 1:
    return np.logaddexp(0, logits) - labels * logits
  return np.logaddexp.reduce(logits, axis=1) - logits[np.arange(len(labels)), labels]


TASKS = {"binary": (1, lambda rng: rng.integers(0, 2, 6)),
         "multiclass": (3, lambda rng: rng.integers(0, 3, 6)),
         "multilabel": (3, lambda rng: rng.integers(-1, 2, (6, 3)))}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_mixed_step_loss_is_lam_own_plus_one_minus_lam_partner(task, mix, weighted):
  outputs, draw = TASKS[task]
  rng = np.random.default_rng(1)
  model = Tiny(outputs)
  images = jnp.asarray(rng.normal(size=(6, 8, 8, 3)), jnp.float32)
  batch = {"image": images, "label": jnp.asarray(draw(rng))}
  if weighted and task != "multilabel":  # class weights act on classes
    batch["weight"] = jnp.asarray(rng.uniform(0.5, 2.0, 6), jnp.float32)
  variables = model.init(jax.random.key(0), images, train=False)
  state = steps.create_state(variables, optax.sgd(0.1))
  alpha = {"mixup": 0.4, "cutmix": 1.0}[mix]
  mixer = functools.partial(getattr(mixing, mix), alpha=alpha)
  key = jax.random.key(7)
  _, got = steps.train_step(state, batch, key, model=model, tx=optax.sgd(0.1),
                            mix=lambda x, k: mixer(x, k))
  # By hand: the same keys, the same mixed images, the forward pass, the formula.
  dropout, mix_key = steps.step_keys(key, state.step)
  mixed = mixer(images, mix_key)
  logits, _ = model.apply(variables, mixed.images, train=True, rngs={"dropout": dropout},
                          mutable=["batch_stats"])
  labels, perm, lam = np.asarray(batch["label"]), np.asarray(mixed.permutation), float(mixed.lam)
  weight = np.asarray(batch.get("weight", np.ones(6)))
  want = np.mean(lam * weight * _hand_cross_entropy(logits, labels)
                 + (1 - lam) * weight[perm] * _hand_cross_entropy(logits, labels[perm]))
  assert float(got["loss"]) == pytest.approx(want, rel=1e-5)
  own, partner = (float(steps.accuracy(logits, jnp.asarray(y))) for y in (labels, labels[perm]))
  assert float(got["accuracy"]) == pytest.approx(lam * own + (1 - lam) * partner, rel=1e-6)


def test_mixing_composes_with_device_augmentation():
  """Cached integer pixels are augmented and scaled inside the step, then mixed."""
  config = default.get_config()
  prepare = functools.partial(device_augment.model_input, augment=config.augment,
                              value_range=config.value_range)
  rng = np.random.default_rng(2)
  batch = {"image": jnp.asarray(rng.integers(0, 255, (4, 8, 8, 1)), jnp.uint8),
           "transform": jnp.asarray(np.tile(np.eye(3, dtype=np.float32).reshape(9)[:8], (4, 1))),
           "label": jnp.array([0, 1, 1, 0])}
  model = Tiny(1)
  variables = model.init(jax.random.key(0), prepare(batch), train=False)
  state = steps.create_state(variables, optax.sgd(0.1))
  mixer = functools.partial(mixing.mixup, alpha=0.4)
  key = jax.random.key(1)
  _, got = steps.train_step(state, batch, key, model=model, tx=optax.sgd(0.1), prepare=prepare,
                            mix=mixer)
  dropout, mix_key = steps.step_keys(key, state.step)
  mixed = mixer(prepare(batch), mix_key)
  assert float(jnp.min(prepare(batch))) >= -1 and float(jnp.max(prepare(batch))) <= 1
  logits, _ = model.apply(variables, mixed.images, train=True, rngs={"dropout": dropout},
                          mutable=["batch_stats"])
  labels, perm, lam = np.asarray(batch["label"]), np.asarray(mixed.permutation), float(mixed.lam)
  want = np.mean(lam * _hand_cross_entropy(logits, labels)
                 + (1 - lam) * _hand_cross_entropy(logits, labels[perm]))
  assert float(got["loss"]) == pytest.approx(want, rel=1e-5)


def test_without_mixing_the_step_is_the_plain_one_bit_for_bit():
  rng = np.random.default_rng(3)
  model = Tiny(1)
  batch = {"image": jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32),
           "label": jnp.array([0, 1, 1, 0])}
  variables = model.init(jax.random.key(0), batch["image"], train=False)
  tx = optax.adam(1e-3)
  key = jax.random.key(5)
  plain, plain_metrics = steps.train_step(steps.create_state(variables, tx), batch, key,
                                          model=model, tx=tx)
  off, off_metrics = steps.train_step(
      steps.create_state(variables, tx), batch, key, model=model, tx=tx,
      loss=functools.partial(losses.cross_entropy, config=settings(mixup_alpha=0.0)),
      mix=mixing.from_config(settings(mixup_alpha=0.0, cutmix_alpha=0.0)))
  assert float(plain_metrics["loss"]) == float(off_metrics["loss"])
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(off.params)):
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# Sharing compiled steps between runs
# ------------------------------------------------------------------------------------------------

def scaled_loss(logits, labels, config):
  """Cross-entropy times a setting radjax has never heard of."""
  return config.loss_scale * losses.cross_entropy(logits, labels)


def host_reading_loss(logits, labels, config):
  return config.seed * losses.cross_entropy(logits, labels)


def test_runs_share_steps_only_when_every_setting_that_may_reach_them_is_equal():
  from radjax.training import run as run_lib

  run_lib.clear_steps_cache()
  model = Tiny(1)
  rng = np.random.default_rng(4)
  batch = {"image": rng.normal(size=(4, 8, 8, 3)).astype(np.float32),
           "label": np.array([0, 1, 1, 0], np.int32)}
  variables = model.init(jax.random.key(0), jnp.asarray(batch["image"]), train=False)

  def built(**values):
    config = default.get_config()
    config.loss, config.loss_scale = "test_losses:scaled_loss", 1.0  # a researcher's new field
    config.update(values)
    return run_lib._steps_for(config, model, None, variables["params"])

  _, one, create_one = built()
  _, two, create_two = built(loss_scale=2.0)
  assert two is not one  # a new setting keys the cache without being listed anywhere
  assert built()[1] is one  # equal settings share the traced and compiled step
  assert built(num_epochs=99, seed=3, data_dir="/elsewhere", image_size=150)[1] is one
  assert built(learning_rate=1e-3)[1] is not one and built(mixup_alpha=0.2)[1] is not one
  key = jax.random.key(0)
  loss_one = one.train(create_one(variables), one.shard(batch), key)[1]["loss"]
  loss_two = two.train(create_two(variables), two.shard(batch), key)[1]["loss"]
  assert float(loss_two) == pytest.approx(2 * float(loss_one), rel=1e-6)
  # Host settings are not in the key, so the step builders cannot see them: reading one fails.
  _, reads_seed, create = built(loss="test_losses:host_reading_loss")
  with pytest.raises(AttributeError, match="seed"):
    reads_seed.train(create(variables), reads_seed.shard(batch), key)
  assert "seed" not in run_lib.step_settings(default.get_config())
