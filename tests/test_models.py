"""The model's hand-written gradients (CPU lowering) against TensorFlow and Flax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radjax.models.batch_norm import BatchNorm
from radjax.models.inception_v3 import window_max_pool


@pytest.mark.parametrize("shape,strides", [((2, 36, 35, 3), (2, 2)), ((1, 9, 10, 2), (1, 1))])
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
def test_batch_norm_matches_flax_values_statistics_and_gradients(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 7, 5, 6)) * 3 + 2, dtype)
  weight = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(6), jnp.float32)
  stats = {"mean": jnp.asarray(rng.standard_normal(6), jnp.float32),
           "var": jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32)}
  variables = {"params": {"bias": bias}, "batch_stats": stats}
  flax_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-3, use_scale=False, use_fast_variance=False,
                         dtype=dtype)
  ours = BatchNorm(momentum=0.9, epsilon=1e-3, dtype=dtype)
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
  for a, b in zip(jax.tree.leaves((got_stats, got_grads)),
                  jax.tree.leaves((expected_stats, expected_grads))):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol,
                               atol=tol)
  # Inference mode: the running averages.
  np.testing.assert_allclose(
      np.asarray(ours.apply(variables, x, True), np.float32),
      np.asarray(flax_bn.apply(variables, x, use_running_average=True), np.float32), rtol=tol)
