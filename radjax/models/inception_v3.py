"""InceptionV3 in Flax linen, layer for layer the network of `keras.applications.InceptionV3`.

The architecture is written once, as data (`STEM` and `BLOCKS`), and read by two consumers: the
`InceptionV3` module below and `radjax.models.weights`, which needs Keras' layer order to load `.h5` files.
Every unit is Conv (no bias) -> BatchNorm (no scale, eps 1e-3, momentum 0.99) -> ReLU, as Keras'
`conv2d_bn`; branch order inside each block is Keras' concatenation order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from radjax.models.batch_norm import BatchNorm


@dataclasses.dataclass(frozen=True)
class Conv:
  """One `conv2d_bn` unit of Keras' source."""
  filters: int
  kernel: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: str = "SAME"


@dataclasses.dataclass(frozen=True)
class Pool:
  kind: str  # "avg" or "max"
  strides: tuple[int, int] = (1, 1)
  padding: str = "SAME"


@dataclasses.dataclass(frozen=True)
class Split:
  """Two convolutions applied to the same input and concatenated (mixed9 and mixed10)."""
  a: Conv
  b: Conv


Op = Union[Conv, Pool, Split]
Branch = tuple[str, tuple[Op, ...]]


def _conv(filters, kh, kw, strides=(1, 1), padding="SAME"):
  return Conv(filters, (kh, kw), strides, padding)


_AVG = Pool("avg")  # 3x3, stride 1, SAME, padding excluded from the count (Keras semantics)
_MAX = Pool("max", (2, 2), "VALID")
_S2 = dict(strides=(2, 2), padding="VALID")

STEM: tuple[Op, ...] = (
    _conv(32, 3, 3, **_S2),
    _conv(32, 3, 3, padding="VALID"),
    _conv(64, 3, 3),
    _MAX,
    _conv(80, 1, 1, padding="VALID"),
    _conv(192, 3, 3, padding="VALID"),
    _MAX,
)


def _block_a(pool_filters: int) -> tuple[Branch, ...]:
  return (
      ("branch1x1", (_conv(64, 1, 1),)),
      ("branch5x5", (_conv(48, 1, 1), _conv(64, 5, 5))),
      ("branch3x3dbl", (_conv(64, 1, 1), _conv(96, 3, 3), _conv(96, 3, 3))),
      ("branch_pool", (_AVG, _conv(pool_filters, 1, 1))),
  )


def _block_c(c7: int) -> tuple[Branch, ...]:
  return (
      ("branch1x1", (_conv(192, 1, 1),)),
      ("branch7x7", (_conv(c7, 1, 1), _conv(c7, 1, 7), _conv(192, 7, 1))),
      ("branch7x7dbl", (_conv(c7, 1, 1), _conv(c7, 7, 1), _conv(c7, 1, 7), _conv(c7, 7, 1),
                        _conv(192, 1, 7))),
      ("branch_pool", (_AVG, _conv(192, 1, 1))),
  )


_BLOCK_E: tuple[Branch, ...] = (
    ("branch1x1", (_conv(320, 1, 1),)),
    ("branch3x3", (_conv(384, 1, 1), Split(_conv(384, 1, 3), _conv(384, 3, 1)))),
    ("branch3x3dbl", (_conv(448, 1, 1), _conv(384, 3, 3), Split(_conv(384, 1, 3), _conv(384, 3, 1)))),
    ("branch_pool", (_AVG, _conv(192, 1, 1))),
)

BLOCKS: tuple[tuple[str, tuple[Branch, ...]], ...] = (
    ("mixed0", _block_a(32)),
    ("mixed1", _block_a(64)),
    ("mixed2", _block_a(64)),
    ("mixed3", (
        ("branch3x3", (_conv(384, 3, 3, **_S2),)),
        ("branch3x3dbl", (_conv(64, 1, 1), _conv(96, 3, 3), _conv(96, 3, 3, **_S2))),
        ("branch_pool", (_MAX,)),
    )),
    ("mixed4", _block_c(128)),
    ("mixed5", _block_c(160)),
    ("mixed6", _block_c(160)),
    ("mixed7", _block_c(192)),
    ("mixed8", (
        ("branch3x3", (_conv(192, 1, 1), _conv(320, 3, 3, **_S2))),
        ("branch7x7x3", (_conv(192, 1, 1), _conv(192, 1, 7), _conv(192, 7, 1), _conv(192, 3, 3, **_S2))),
        ("branch_pool", (_MAX,)),
    )),
    ("mixed9", _BLOCK_E),
    ("mixed10", _BLOCK_E),
)

NUM_FEATURES = 2048


def unit_name(scope: str, index: int, sub: str = "") -> str:
  """Flax module name of the conv unit at 1-based position `index` of a stem or branch.

  `scope` is "stem" or "{block}_{branch}"; `sub` is "a"/"b" inside a `Split`.
  Shared by the module and by `radjax.models.weights`, so both agree on names.
  """
  return f"{scope}_{index}{sub}"


# Keras' Conv2D default initializer; used for training from scratch (weights="none").
_KERNEL_INIT = nn.initializers.glorot_uniform()


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow's SAME padding: the extra pixel, if any, goes after."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _windows(x, kernel: tuple[int, int], strides: tuple[int, int]) -> list:
  """The kh*kw strided slices of NHWC `x` that a VALID window op reads, in row-major window order:
  slice k holds, for every output pixel, the input pixel at window position divmod(k, kw)."""
  (kh, kw), (sh, sw) = kernel, strides
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  return [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]


class GemmConv(nn.Module):
  """A convolution written as patch extraction + one matrix multiply (same `kernel` as nn.Conv).

  The patches are strided slices concatenated along channels, so autodiff turns the backward pass
  into two matrix multiplies plus pads and adds; XLA's CPU backend runs those much faster than
  its generic gradient convolutions. 1x1 convolutions become a plain matrix multiply.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    kernel = self.param("kernel", _KERNEL_INIT, (kh, kw, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.padding == "SAME":
      x = jnp.pad(x, ((0, 0), _same_padding(x.shape[1], kh, sh), _same_padding(x.shape[2], kw, sw),
                      (0, 0)))
    patches = _windows(x, self.kernel_size, self.strides)
    patches = patches[0] if len(patches) == 1 else jnp.concatenate(patches, axis=-1)
    return patches @ kernel.reshape(-1, self.features)


def window_max_pool(x, kernel: tuple[int, int], strides: tuple[int, int]):
  """VALID max pooling of NHWC `x` as the maximum of its window slices, with a hand-written
  gradient that goes to the first maximum of each window (row-major), as in TensorFlow's
  MaxPoolGrad.

  Why: XLA's CPU backend expands the gradient of `lax.reduce_window` max pooling (a
  select-and-scatter) into index arrays and a scatter (docs/benchmarks.md and docs/results.md). Here the forward pass
  keeps each window's winning position as int8 and the backward pass is nine pads of the masked
  cotangent, summed in one fused loop.
  """
  return _window_max_pool(x, kernel, strides, x.shape[1:3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _window_max_pool(x, kernel, strides, in_size):
  del in_size  # the backward pass needs it
  return functools.reduce(jnp.maximum, _windows(x, kernel, strides))


@jax.named_scope("max_pool")  # names its ops in profiles
def _window_max_pool_fwd(x, kernel, strides, in_size):
  del in_size
  windows = _windows(x, kernel, strides)
  out, winner = windows[0], jnp.zeros(windows[0].shape, jnp.int8)
  for k, window in enumerate(windows[1:], start=1):
    better = window > out  # strict: ties keep the earlier position
    out, winner = jnp.where(better, window, out), jnp.where(better, jnp.int8(k), winner)
  return out, winner


@jax.named_scope("max_pool")
def _window_max_pool_bwd(kernel, strides, in_size, winner, g):
  (_, kw), (sh, sw), (height, width) = kernel, strides, in_size
  out_h, out_w = g.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  dx = None
  for k in range(kernel[0] * kw):
    i, j = divmod(k, kw)
    # Window position (i, j) of output pixel (r, c) is input pixel (i + sh*r, j + sw*c).
    config = ((0, 0, 0), (i, height - i - sh * (out_h - 1) - 1, sh - 1),
              (j, width - j - sw * (out_w - 1) - 1, sw - 1), (0, 0, 0))
    term = jax.lax.pad(jnp.where(winner == k, g, zero), zero, config)
    dx = term if dx is None else dx + term
  return (dx,)


_window_max_pool.defvjp(_window_max_pool_fwd, _window_max_pool_bwd)


# The convolution and max-pool lowerings. Each pair has the same parameters and results (to float
# rounding); "gemm" and "window" are what XLA's CPU backend differentiates faster (docs/results.md,
# "Train step on CPU"). radjax.training.run picks them per backend.
XlaConv = functools.partial(nn.Conv, use_bias=False, kernel_init=_KERNEL_INIT)


def xla_max_pool(x, kernel: tuple[int, int], strides: tuple[int, int]):
  """VALID max pooling with `lax.reduce_window` (flax' max_pool)."""
  return nn.max_pool(x, kernel, strides, "VALID")


ModuleDef = Any
CONVS = {"xla": XlaConv, "gemm": GemmConv}
MAX_POOLS = {"xla": xla_max_pool, "window": window_max_pool}


def lowering(conv: str, pool: str | None = None) -> dict[str, Any]:
  """The `conv` module and `max_pool` function for InceptionV3: conv "xla" or "gemm", pool "xla" or
  "window" (by default "window" with "gemm", as on CPU, and "xla" with "xla")."""
  if conv not in CONVS:
    raise ValueError(f"unknown convolution lowering {conv!r}: expected one of {', '.join(CONVS)}")
  pool = pool or ("window" if conv == "gemm" else "xla")
  if pool not in MAX_POOLS:
    raise ValueError(f"unknown max-pool lowering {pool!r}: expected one of {', '.join(MAX_POOLS)}")
  return {"conv": CONVS[conv], "max_pool": MAX_POOLS[pool]}


class ConvBN(nn.Module):
  spec: Conv
  conv: ModuleDef = XlaConv
  dtype: Any = jnp.float32
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_closed_form_grad: bool = True
  bn_one_pass: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    x = self.conv(self.spec.filters, self.spec.kernel, self.spec.strides, self.spec.padding,
                  dtype=self.dtype, name="conv")(x)
    x = BatchNorm(self.bn_momentum, self.bn_epsilon, self.dtype, self.bn_closed_form_grad,
                  self.bn_one_pass, name="bn")(x, not train)
    return nn.relu(x)


POOL_WINDOW = (3, 3)  # every InceptionV3 pool


def _pool(spec: Pool, x, max_pool):
  if spec.kind == "max":
    assert spec.padding == "VALID"  # InceptionV3's max pools all are
    return max_pool(x, POOL_WINDOW, spec.strides)
  # Keras' AveragePooling2D(padding="same") divides by the number of real pixels in the window.
  return nn.avg_pool(x, POOL_WINDOW, spec.strides, spec.padding, count_include_pad=False)


class InceptionV3(nn.Module):
  """Keras' InceptionV3 without its top (`include_top=False, pooling=None`).

  Input: NHWC float images, at least 75x75 (any aspect). Output: the (N, h, w, 2048) feature map.
  `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32.
  """
  dtype: Any = jnp.float32
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  frozen_stages: int = 0  # leading stages (0 = stem, k = mixed{k-1}) whose BN stays in inference mode
  conv: ModuleDef = XlaConv  # see `lowering`
  max_pool: Any = xla_max_pool
  bn_closed_form_grad: bool = True  # see radjax.models.batch_norm
  bn_one_pass: bool = False

  def _unit(self, spec: Conv, name: str):
    return ConvBN(spec, self.conv, self.dtype, self.bn_momentum, self.bn_epsilon,
                  self.bn_closed_form_grad, self.bn_one_pass, name=name)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.shape[1] < 75 or x.shape[2] < 75:
      raise ValueError(f"InceptionV3 needs images of at least 75x75 pixels, got {x.shape[1:3]}")
    x = x.astype(self.dtype)
    stem_train = train and self.frozen_stages <= 0
    for i, op in enumerate(STEM, start=1):
      if isinstance(op, Conv):
        x = self._unit(op, unit_name("stem", i))(x, stem_train)
      else:
        x = _pool(op, x, self.max_pool)
    for stage, (block, branches) in enumerate(BLOCKS, start=1):
      block_train = train and stage >= self.frozen_stages
      outputs = []
      for branch, ops in branches:
        scope = f"{block}_{branch}"
        y = x
        for i, op in enumerate(ops, start=1):
          if isinstance(op, Pool):
            y = _pool(op, y, self.max_pool)
          elif isinstance(op, Split):
            y = jnp.concatenate([
                self._unit(op.a, unit_name(scope, i, "a"))(y, block_train),
                self._unit(op.b, unit_name(scope, i, "b"))(y, block_train)], axis=-1)
          else:
            y = self._unit(op, unit_name(scope, i))(y, block_train)
        outputs.append(y)
      x = jnp.concatenate(outputs, axis=-1)
      # Explanations (radjax.commands.explain): an "explain" variable of the block's shape is added to its
      # output, so the gradient with respect to it is the gradient with respect to the block's
      # activations, which are sown as intermediates. Both are no-ops (nothing traced) unless the
      # caller passes that collection or makes "intermediates" mutable.
      if self.has_variable("explain", block):
        x = x + self.get_variable("explain", block)
      self.sow("intermediates", block, x)
    return x
