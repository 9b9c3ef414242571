"""The input pipeline alone, no model: radjax' tf.data pipeline of hello_world's training films
(decoded, resized and cached in the first epoch, then augmented), `--pipeline-epochs` epochs from
one pipeline as the training loop iterates it, against Keras' `ImageDataGenerator
.flow_from_directory` with the same augmentation settings. Whether the host can feed the step.
"""

from __future__ import annotations

import pathlib
import statistics
import time

from bench import REPO
from bench.records import emit
from bench.step import timed_repeats


def tensorflow_available(part: str) -> bool:
  """The pipeline and end-to-end parts need TensorFlow (a CUDA machine may have none)."""
  try:
    from radjax.data import preprocess
    preprocess.tensorflow()
  except ImportError as e:
    emit(part=part, impl="radjax", skipped=f"tensorflow not installed ({e.name})")
    return False
  return True


def bench_pipeline(args) -> None:
  if not tensorflow_available("pipeline"):
    return
  from radjax.training import config as config_lib
  from radjax.data import files, listing

  config = config_lib.load_config(REPO / "configs" / "hello_world.py",
                                  [f"--config.image_size={args.image_size}"])
  folders = listing.list_folders(args.data_dir)
  pipeline = files.Pipeline(folders, config)
  n = pipeline.steps_per_epoch(config.batch_size) * config.batch_size
  start = time.perf_counter()
  for _ in pipeline.train_batches(config.batch_size, 0):
    pass
  first_epoch_s = time.perf_counter() - start  # decoding + resizing + caching included

  def epochs():  # as the training loop iterates: one pipeline over the epochs
    for _ in pipeline.train_batches(config.batch_size, 1, args.pipeline_epochs):
      pass

  times = timed_repeats(epochs, args.repeats)
  emit(part="pipeline", impl="radjax", images_per_s=n * args.pipeline_epochs / statistics.median(times),
       first_epoch_images_per_s=n / first_epoch_s, image_size=args.image_size,
       batch=config.batch_size)

  try:
    from tf_keras.preprocessing.image import ImageDataGenerator
  except ImportError as e:
    emit(part="pipeline", impl="keras", skipped=f"not installed ({e.name})")
    return
  aug = config.augment  # the same settings as radjax' pipeline, from the config
  generator = ImageDataGenerator(rotation_range=aug.rotation_range,
                                 width_shift_range=aug.width_shift_range,
                                 height_shift_range=aug.height_shift_range,
                                 shear_range=aug.shear_range, zoom_range=aug.zoom_range,
                                 horizontal_flip=aug.horizontal_flip, fill_mode=aug.fill_mode,
                                 rescale=1.0 / 255)
  flow = generator.flow_from_directory(str(pathlib.Path(args.data_dir) / "TRAIN"),
                                       target_size=(args.image_size, args.image_size),
                                       batch_size=config.batch_size, class_mode="binary", seed=0)
  batches = len(flow) * args.pipeline_epochs

  def keras_epochs():
    for _ in range(batches):
      next(flow)

  times = timed_repeats(keras_epochs, args.repeats)
  emit(part="pipeline", impl="keras", images_per_s=flow.n * args.pipeline_epochs / statistics.median(times),
       image_size=args.image_size, batch=config.batch_size)
