"""The Keras peer: the paper's own model (tf_keras InceptionV3 with its head of Dense 256, dropout
0.5 and a sigmoid, Adam at its settings) through `train_on_batch` on the CPU, at the same batch and
image size as radjax' step and timed the same way (`timed_repeats`). Skipped when TensorFlow or
tf_keras is not installed: the rest of the benchmark needs neither.
"""

from __future__ import annotations

import os
import statistics
import time

from bench.records import emit
from bench.step import timed_repeats


def bench_keras_step(batch: int, args) -> None:
  try:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    import tf_keras
  except ImportError as e:
    emit(part="train_step", impl="keras", skipped=f"not installed ({e.name})")
    return
  tf.config.set_visible_devices([], "GPU")  # the CPU peer; Keras-on-GPU is not benchmarked
  base = tf_keras.applications.InceptionV3(weights=None, include_top=False,
                                           input_shape=(args.image_size, args.image_size, 3))
  x = tf_keras.layers.GlobalAveragePooling2D()(base.output)
  x = tf_keras.layers.Dense(256, activation="relu")(x)
  x = tf_keras.layers.Dropout(0.5)(x)
  out = tf_keras.layers.Dense(1, activation="sigmoid")(x)
  model = tf_keras.Model(base.input, out)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                loss="binary_crossentropy", metrics=["accuracy"])
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(np.float32)
  labels = rng.integers(0, 2, (batch, 1)).astype(np.float32)
  start = time.perf_counter()
  model.train_on_batch(images, labels)  # builds the tf.function graph
  compile_s = time.perf_counter() - start

  def run(n):
    return lambda: [model.train_on_batch(images, labels) for _ in range(n)]

  run(args.warmup)()
  times = timed_repeats(run(args.steps), args.repeats)
  ms = statistics.median(times) / args.steps * 1e3
  emit(part="train_step", impl="keras", device="cpu", batch=batch, dtype="float32",
       image_size=args.image_size, ms_per_step=ms, images_per_s=batch * 1e3 / ms,
       compile_s=compile_s, repeats=[t / args.steps * 1e3 for t in times],
       version=tf_keras.__version__)
