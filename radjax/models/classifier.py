"""The paper's classifier: InceptionV3 backbone + GAP -> Dense(256, ReLU) -> Dropout -> Dense(1).

It returns logits; the sigmoid lives in the loss (`optax.sigmoid_binary_cross_entropy`) and in
prediction (`jax.nn.sigmoid`), both numerically stable for large |logit|.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from radjax.models.inception_v3 import InceptionV3, XlaConv, xla_max_pool

# Keras' Dense default initializers, so a radjax head starts like the paper's.
_DENSE_INIT = dict(kernel_init=nn.initializers.glorot_uniform(), bias_init=nn.initializers.zeros)


class Classifier(nn.Module):
  """Binary (num_outputs=1) or multi-class classifier over an InceptionV3 feature map."""
  hidden_units: int = 256
  dropout_rate: float = 0.5
  num_outputs: int = 1
  dtype: Any = jnp.float32
  bn_momentum: float = 0.99
  # Leading backbone stages (stem, mixed0, ...) that are frozen: their BatchNorm always runs in
  # inference mode, as a frozen Keras layer does.
  frozen_stages: int = 0
  conv: Any = XlaConv  # the lowering, see radjax.models.inception_v3.lowering
  max_pool: Any = xla_max_pool
  bn_closed_form_grad: bool = True
  bn_one_pass: bool = False  # BatchNorm statistics in one read (radjax.models.batch_norm)

  @nn.compact
  def __call__(self, x, train: bool = False):
    features = InceptionV3(dtype=self.dtype, bn_momentum=self.bn_momentum,
                           frozen_stages=self.frozen_stages, conv=self.conv,
                           max_pool=self.max_pool,
                           bn_closed_form_grad=self.bn_closed_form_grad,
                           bn_one_pass=self.bn_one_pass, name="backbone")(x, train=train)
    x = jnp.mean(features.astype(jnp.float32), axis=(1, 2))  # GlobalAveragePooling2D
    x = nn.relu(nn.Dense(self.hidden_units, name="hidden", **_DENSE_INIT)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_outputs, name="logits", **_DENSE_INIT)(x)
    return logits[..., 0] if self.num_outputs == 1 else logits
