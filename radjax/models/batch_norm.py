"""Training-mode BatchNorm (no scale, as Keras' InceptionV3) with a hand-written gradient.

Same variables and normalisation as `flax.linen.BatchNorm(use_scale=False, use_fast_variance=False)`:
`params/bias`, `batch_stats/mean` and `batch_stats/var`, statistics in float32. The variance is
two-pass, as Keras' tf.nn.moments: E[x^2] - E[x]^2 loses every digit when a channel's variance is
small next to its mean (late layers, few pixels per channel). As in Keras (TensorFlow's fused batch
norm), the running variance averages the Bessel-corrected batch variance, n / (n - 1) times the
one used to normalise (flax averages the biased one).
In training mode each layer also sows its batch (mean, biased var) into the "moments" collection
when the caller makes it mutable: precise BatchNorm pools them over the training set.
Why: autodiff through the two-pass variance gives XLA's CPU backend several reductions and
element-wise passes per layer; the closed-form gradient
    dx = rsqrt(var + eps) * (g - mean(g) - xhat * mean(g * xhat))
needs two reductions (fused into one pass) and one element-wise pass.
`one_pass` computes the statistics in one read of x instead of two (the mean, then the squared
deviations from it): sum(d) and sum(d^2) of d = x - shift, with the shift one of x's own values per
channel. E[d^2] - E[d]^2 then loses about log10(1 + ((mean - shift) / std)^2) digits, not the
log10((mean / std)^2) of the unshifted formula, and a value of the data itself lies within a few
standard deviations of the mean.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """Normalises over all axes but the last; `use_running_average` selects inference mode."""
  momentum: float = 0.99
  epsilon: float = 1e-3
  dtype: Any = jnp.float32
  # False: autodiff through the same forward computation (same values; which is faster depends on
  # the backend, see radjax.training.run.IMPLEMENTATIONS).
  closed_form_grad: bool = True
  one_pass: bool = False  # the batch statistics in one read of x (see above)

  @nn.compact
  def __call__(self, x, use_running_average: bool):
    features = x.shape[-1]
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    if use_running_average:
      y = (x.astype(jnp.float32) - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
      return (y + bias).astype(self.dtype)
    if self.closed_form_grad:
      y, mean, var = normalize(x, bias, self.epsilon, self.dtype, self.one_pass)
    else:
      (y, mean, var), _ = _normalize_fwd(x, bias, self.epsilon, self.dtype, self.one_pass)
    if not self.is_initializing():
      n = x.size // features
      unbiased = var * (n / max(n - 1, 1))
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
      self.sow("moments", "mean_var", (mean, var), init_fn=tuple, reduce_fn=lambda _, new: new)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def normalize(x, bias, epsilon: float, dtype, one_pass: bool = False):
  """(x - mean) / sqrt(var + eps) + bias over all axes but the last, and (mean, var)."""
  return _normalize_fwd(x, bias, epsilon, dtype, one_pass)[0]


def moments(x32, axes, one_pass: bool):
  """Mean and biased variance of float32 `x32` over `axes`: two passes, or one shifted pass."""
  if not one_pass:
    mean = jnp.mean(x32, axes)
    return mean, jnp.mean(jnp.square(x32 - mean), axes)
  shift = jax.lax.stop_gradient(x32[(0,) * len(axes)])  # each channel's first value
  d = x32 - shift
  d_mean, d_square = jnp.mean(d, axes), jnp.mean(jnp.square(d), axes)
  return shift + d_mean, jnp.maximum(d_square - jnp.square(d_mean), 0.0)


@jax.named_scope("bn")
def _normalize_fwd(x, bias, epsilon, dtype, one_pass=False):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean, var = moments(x32, axes, one_pass)
  inv = jax.lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * inv + bias).astype(dtype)
  return (y, mean, var), (x, mean, inv)


@jax.named_scope("bn")
def _normalize_bwd(epsilon, dtype, one_pass, residuals, cotangents):
  del epsilon, dtype, one_pass
  x, mean, inv = residuals
  g, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  g = g.astype(jnp.float32)
  xc = x.astype(jnp.float32) - mean
  g_bias = jnp.sum(g, axes)
  g_scale = jnp.sum(g * xc, axes) * inv  # sum(g * xhat)
  # The running averages' cotangents (zero in training: they do not reach the loss) keep the
  # gradient exact for any use of (mean, var).
  dx = (inv * (g - g_bias / n - xc * (inv * g_scale / n))
        + g_mean / n + xc * (2 * g_var / n))
  return dx.astype(x.dtype), g_bias


normalize.defvjp(_normalize_fwd, _normalize_bwd)
