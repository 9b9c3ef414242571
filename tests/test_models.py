"""The model's hand-written gradients (CPU lowering) against TensorFlow and Flax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radjax.models.batch_norm import BatchNorm
from radjax.models.inception_v3 import window_max_pool


@pytest.mark.parametrize("shape,strides", [((2, 36, 35, 3), (2, 2)), ((1, 9, 10, 2), (1, 1))])
@pytest.mark.usefixtures("optimized_xla")
def test_window_max_pool_matches_tensorflow_value_and_gradient(shape, strides):
  import tensorflow as tf

  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  x[x < 0] = 0.0  # ReLU outputs: many tied windows, which TensorFlow gives to the first maximum
  g = rng.standard_normal((shape[0], (shape[1] - 3) // strides[0] + 1,
                           (shape[2] - 3) // strides[1] + 1, shape[3])).astype(np.float32)
  tx = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(tx)
    expected = tf.nn.max_pool2d(tx, 3, strides, "VALID")
  expected_grad = tape.gradient(expected, tx, output_gradients=tf.constant(g)).numpy()
  got, pullback = jax.vjp(lambda v: window_max_pool(v, (3, 3), strides), jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(got), expected.numpy())
  np.testing.assert_allclose(np.asarray(pullback(jnp.asarray(g))[0]), expected_grad, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.usefixtures("optimized_xla")
@pytest.mark.parametrize("closed_form_grad,one_pass", [(True, False), (False, False),
                                                       (True, True), (False, True)])
def test_batch_norm_matches_flax_values_statistics_and_gradients(dtype, closed_form_grad, one_pass):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 7, 5, 6)) * 3 + 2, dtype)
  weight = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(6), jnp.float32)
  stats = {"mean": jnp.asarray(rng.standard_normal(6), jnp.float32),
           "var": jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32)}
  variables = {"params": {"bias": bias}, "batch_stats": stats}
  flax_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-3, use_scale=False, use_fast_variance=False,
                         dtype=dtype)
  ours = BatchNorm(momentum=0.9, epsilon=1e-3, dtype=dtype, closed_form_grad=closed_form_grad,
                   one_pass=one_pass)
  assert (jax.tree.map(jnp.shape, flax_bn.init(jax.random.key(0), x, use_running_average=False))
          == jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x, False)))

  def loss(apply, variables, x):
    y, updates = apply(variables, x)
    # A non-linear loss, so that every term of the gradient matters.
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * weight), updates

  flax_apply = lambda v, x: flax_bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  our_apply = lambda v, x: ours.apply(v, x, False, mutable=["batch_stats"])
  (expected, expected_stats), expected_grads = jax.value_and_grad(
      loss, argnums=(1, 2), has_aux=True)(flax_apply, variables, x)
  (got, got_stats), got_grads = jax.value_and_grad(
      loss, argnums=(1, 2), has_aux=True)(our_apply, variables, x)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(got, expected, rtol=tol)
  # The running variance averages the Bessel-corrected batch variance (Keras), flax the biased one.
  n = x.size // x.shape[-1]
  flax_var = expected_stats["batch_stats"]["var"]
  expected_stats["batch_stats"]["var"] = 0.9 * stats["var"] + (flax_var - 0.9 * stats["var"]) * n / (n - 1)
  for a, b in zip(jax.tree.leaves((got_stats, got_grads)),
                  jax.tree.leaves((expected_stats, expected_grads))):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol,
                               atol=tol)
  # Inference mode: the running averages.
  np.testing.assert_allclose(
      np.asarray(ours.apply(variables, x, True), np.float32),
      np.asarray(flax_bn.apply(variables, x, use_running_average=True), np.float32), rtol=tol)


def test_one_pass_statistics_keep_their_digits_where_the_plain_formula_loses_them():
  """A channel whose mean is 3,000 standard deviations from zero (late layers, few pixels per
  channel): E[x^2] - E[x]^2 in float32 loses the variance entirely; the shifted one pass keeps it
  to the two-pass result's accuracy. Reference: float64."""
  from radjax.models import batch_norm

  rng = np.random.default_rng(0)
  x = (rng.standard_normal((8, 6, 6, 4)) + np.array([3000.0, -2000.0, 0.0, 1e4])).astype(np.float32)
  axes = (0, 1, 2)
  exact = np.var(x.astype(np.float64), axis=axes)
  two_mean, two_var = batch_norm.moments(jnp.asarray(x), axes, one_pass=False)
  one_mean, one_var = batch_norm.moments(jnp.asarray(x), axes, one_pass=True)
  plain = np.mean(np.square(x), axis=axes) - np.square(np.mean(x, axis=axes))  # float32
  exact_mean = np.mean(x.astype(np.float64), axis=axes)
  for mean in (one_mean, two_mean):
    np.testing.assert_allclose(np.asarray(mean), exact_mean, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(np.asarray(two_var), exact, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(one_var), exact, rtol=1e-3)
  assert np.max(np.abs(plain - exact) / exact) > 1  # the formula the shift protects against


@pytest.mark.usefixtures("optimized_xla")
def test_running_statistics_update_like_keras_batch_normalization():
  import tf_keras

  rng = np.random.default_rng(1)
  x = (rng.standard_normal((5, 6, 4, 3)) * 2 + 1).astype(np.float32)
  # Named: an unnamed layer would shift the automatic names other tests match on.
  layer = tf_keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3, scale=False,
                                             name="radjax_parity_bn")
  layer.build(x.shape)
  layer(x, training=True)
  keras_mean, keras_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
  ours = BatchNorm(momentum=0.99, epsilon=1e-3)
  variables = ours.init(jax.random.key(0), x, False)
  _, updates = ours.apply(variables, x, False, mutable=["batch_stats"])
  np.testing.assert_allclose(updates["batch_stats"]["mean"], keras_mean, rtol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["var"], keras_var, rtol=1e-5)
  # Not the biased variance's average (what flax does): the test tells the two apart.
  biased = 0.99 + 0.01 * x.reshape(-1, 3).var(0)
  assert not np.allclose(updates["batch_stats"]["var"], biased, rtol=1e-5)


def test_batch_norm_sows_the_batch_moments_in_training_mode():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((3, 4, 4, 2)) * 3 + 1, jnp.float32)
  ours = BatchNorm()
  variables = ours.init(jax.random.key(0), x, False)
  _, state = ours.apply(variables, x, False, mutable=["batch_stats", "moments"])
  mean, var = state["moments"]["mean_var"]
  np.testing.assert_allclose(mean, np.asarray(x).reshape(-1, 2).mean(0), rtol=1e-5)
  np.testing.assert_allclose(var, np.asarray(x).reshape(-1, 2).var(0), rtol=1e-5)
  _, state = ours.apply(variables, x, True, mutable=["batch_stats", "moments"])
  assert "moments" not in state or not state["moments"]  # inference mode sows nothing
