"""A loss of your own, plugged in by one setting and no change to radjax.

A loss takes (logits, labels, config) and returns one value per image (radjax/training/losses.py
says what the labels hold for each task); `--config.loss=package.module:function` names it. This
one is the Brier score, the squared error of the predicted probabilities, which some prefer to
cross-entropy when labels are noisy. radjax weighs it (class_weight), mixes it (mixup, cutmix)
and averages it over the batch; validation still reports plain cross-entropy.

  python examples/custom_loss.py ../shared/datasets/open_i_abd_vs_cxr runs/brier
  radjax train --config smoke --workdir runs/brier2 --config.loss=custom_loss:brier \
      --config.data_dir=...   # with examples/ on PYTHONPATH: the same from the command line

About a minute on 2 CPU cores (the smoke config: 75x75, random init, 2 epochs).
"""

import sys

import jax
import jax.numpy as jnp

from radjax.training import config as config_lib, loop, losses


def brier(logits, labels, config):
  """Mean squared error between the probabilities and the one-hot (or 0/1) targets."""
  if logits.ndim == 1:  # binary: one sigmoid logit
    return jnp.square(jax.nn.sigmoid(logits) - labels)
  if labels.ndim == 2:  # multilabel: each label's own sigmoid, unknown labels (-1) left out
    return losses.known_mean(jnp.square(jax.nn.sigmoid(logits) - (labels == 1)), labels)
  targets = jax.nn.one_hot(labels, logits.shape[-1])  # multiclass: softmax over N logits
  return jnp.sum(jnp.square(jax.nn.softmax(logits) - targets), axis=-1)


def main(data_dir, workdir, *overrides) -> list[dict]:
  config = config_lib.load_config("smoke", [f"--config.data_dir={data_dir}",
                                            f"--config.loss={__name__}:brier", *overrides])
  return loop.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  main(*sys.argv[1:])
