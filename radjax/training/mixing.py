"""Batch mixing inside the jitted train step: mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019).

A mixed batch pairs every image i with image perm[i] of the same batch, in share lam to 1 - lam,
and its loss is lam * loss(y_i) + (1 - lam) * loss(y_perm[i]) (each with its own class weight).
Mixing the losses rather than the labels works alike for a sigmoid, a softmax and multilabel
targets with unknown entries. One lam and one permutation per step, drawn from the step's key, so a
resumed run mixes as the uninterrupted one did. Off (both alphas 0), the step is the plain one.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Mixed(NamedTuple):
  images: jax.Array
  permutation: jax.Array  # (n,) the partner of each image
  lam: jax.Array          # scalar: the share of each image's own label


def mixup(images, rng, alpha: float) -> Mixed:
  """lam ~ Beta(alpha, alpha); every pixel lam * own + (1 - lam) * partner."""
  lam_rng, perm_rng = jax.random.split(rng)
  lam = jax.random.beta(lam_rng, alpha, alpha)
  perm = jax.random.permutation(perm_rng, images.shape[0])
  mixed = lam * images + (1 - lam) * images[perm]
  return Mixed(mixed.astype(images.dtype), perm, lam)


def cutmix(images, rng, alpha: float) -> Mixed:
  """lam ~ Beta(alpha, alpha) sets a box of about (1 - lam) of the area, centred anywhere and
  clipped at the edges, where every image shows its partner; lam is then the share of the
  image left outside the box (what the loss weighs)."""
  lam_rng, perm_rng, y_rng, x_rng = jax.random.split(rng, 4)
  height, width = images.shape[1:3]
  side = jnp.sqrt(1 - jax.random.beta(lam_rng, alpha, alpha))
  top, bottom = box_edges(jax.random.uniform(y_rng) * height, side * height, height)
  left, right = box_edges(jax.random.uniform(x_rng) * width, side * width, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  perm = jax.random.permutation(perm_rng, images.shape[0])
  mixed = jnp.where(box[None, :, :, None], images[perm], images)
  lam = 1 - (bottom - top) * (right - left) / (height * width)
  return Mixed(mixed, perm, lam.astype(jnp.float32))


def box_edges(centre, length, size: int):
  """[start, stop) of a box of `length` pixels around `centre`, rounded and clipped to [0, size]."""
  start = jnp.clip(jnp.round(centre - length / 2), 0, size).astype(jnp.int32)
  stop = jnp.clip(jnp.round(centre + length / 2), 0, size).astype(jnp.int32)
  return start, stop


def from_config(config) -> Callable | None:
  """`(images, rng) -> Mixed` per `config.mixup_alpha` / `config.cutmix_alpha`, None when both
  are 0 (config validation refuses both at once)."""
  if config.mixup_alpha:
    return lambda images, rng: mixup(images, rng, config.mixup_alpha)
  if config.cutmix_alpha:
    return lambda images, rng: cutmix(images, rng, config.cutmix_alpha)
  return None


def describe(config) -> str | None:
  """The console line that says what the training figures are under mixing."""
  for name in ("mixup", "cutmix"):
    alpha = config[f"{name}_alpha"]
    if alpha:
      return (f"Batch mixing: {name}, alpha {alpha}. Training loss and accuracy are against each "
              "mixed image's two labels, weighted by their shares; validation images are not "
              "mixed.")
  return None
