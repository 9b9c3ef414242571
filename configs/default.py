"""Every radjax setting, with the paper's values where the paper gives one.

Variants do `from radjax.configs import default` and change only what differs; every setting is
checked when a config is loaded (radjax/training/config.py). Run by itself it trains the paper's recipe
with radjax' defaults (ImageNet weights, [-1, 1] input, bilinear resize):

  radjax train --config configs/default.py --workdir runs/default --config.data_dir=DATA

Expected: as configs/hello_world.py (docs/results.md).
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # Data. data_dir "" means $RADJAX_DATA_DIR, else the public dataset downloaded into the cache.
  config.data_dir = ""             # TRAIN/ and VAL/ (optional TEST/), one folder per class
  config.image_size = 299          # the paper: 299x299
  config.resize = "squash"         # "squash" (Keras flow_from_directory) or "pad" to square
  config.resize_method = "bilinear"  # or "nearest" (Pillow's, as Keras' load_img), "bicubic", "area"
  config.value_range = "inception"  # "inception" [-1, 1] (what ImageNet weights expect) or "unit" [0, 1]
  config.dicom_voi = "auto"        # DICOM VOI: "auto", "window", "voi_lut" or "none"
  # Near-uniform margins (scanner borders, shutters, letterboxing) removed from every decoded
  # image before resizing, in training and inference alike (radjax/data/borders.py): "off" (the
  # paper) or "auto".
  config.crop_borders = "off"

  # Augmentation (Keras ImageDataGenerator semantics, see radjax/data/augment.py). Training only.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = True
  config.augment.rotation_range = 20.0     # degrees
  config.augment.width_shift_range = 0.2   # fraction of width
  config.augment.height_shift_range = 0.2  # fraction of height
  config.augment.shear_range = 0.2         # degrees (Keras' unit)
  config.augment.zoom_range = 0.2          # x and y zoom each in [0.8, 1.2]
  config.augment.horizontal_flip = True
  config.augment.fill_mode = "nearest"     # or "reflect" (the two that match Keras exactly)
  config.augment.interpolation = "bilinear"
  # Acquisition augmentation (radjax/data/acquisition.py), off by default (not in the paper): each
  # group applies to a training image with its probability, after the affine transform; the
  # stress test (`radjax stress`) uses other strings, colours and places than these draw.
  config.augment.framing = ml_collections.ConfigDict()
  config.augment.framing.probability = 0.0   # uniform bands on 1-4 sides, one random grey
  config.augment.framing.max_fraction = 0.25  # of a side, per band
  config.augment.overlays = ml_collections.ConfigDict()
  config.augment.overlays.probability = 0.0  # a random text token or boxed letter, light grey
  config.augment.intensity = ml_collections.ConfigDict()
  config.augment.intensity.probability = 0.0
  config.augment.intensity.gamma = 1.5       # exponent e^U(-ln g, ln g)
  config.augment.intensity.contrast = 0.3    # factor e^U(-ln 1.3, ln 1.3) about the mean
  config.augment.intensity.brightness = 0.1  # shift U(-0.1, 0.1) of the range
  config.augment.intensity.noise = 0.03      # noise sd U(0, 0.03) of the range
  config.augment.intensity.blur = 1.0        # Gaussian sigma U(0, 1) pixels of the resized film
  # Where the augmentation runs: "host" (tf.data, TensorFlow's resampler) or "device" (inside the
  # jitted train step, radjax/data/device_augment.py: the host only decodes, caches and batches; needed
  # to train from pre-decoded .npz arrays without TensorFlow). Same transforms, to float rounding.
  config.augment_on = "host"

  # Model.
  # "auto": "binary" (the paper's single sigmoid logit) for two classes, "multiclass" (softmax
  # over N logits, cross-entropy) for three or more, "multilabel" (K sigmoid logits, unknown
  # labels masked) for a CSV with one 1/0/blank column per label; or name one (radjax.training.task).
  config.task = "auto"
  config.weights = "imagenet"      # "imagenet", "none", a Keras .h5 file or a converted directory
  config.hidden_units = 256
  config.dropout_rate = 0.5
  config.dtype = "float32"         # compute dtype: "float32" or "bfloat16" (parameters stay float32)
  # How the step computes (same parameters and results, up to float rounding; "auto" = what was
  # measured fastest on the backend: radjax.training.run.IMPLEMENTATIONS, docs/results.md):
  # convolutions "xla" (lax.conv) or "gemm" (patches @ kernel); max pooling "xla"
  # (lax.reduce_window) or "window" (max of window slices, hand-written gradient); BatchNorm's
  # gradient "closed_form" (hand-written) or "autodiff", and its batch statistics "two_pass"
  # (the mean, then the squared deviations) or "one_pass" (both sums in one shifted read).
  config.conv_impl = "auto"
  config.pool_impl = "auto"
  config.bn_grad = "auto"
  config.bn_stats = "auto"
  config.bn_momentum = 0.99        # Keras' BatchNormalization default (Bessel-corrected variance)
  # Recompute BatchNorm statistics on the un-augmented training set (seeded mixed-class batches of
  # batch_size) before each validation and checkpoint ("precise BN"); with 13 steps per epoch,
  # momentum 0.99 averages lag far behind. False: Keras' running averages.
  config.precise_bn = True
  # Precise BN's batches are the same every epoch: kept on the devices when they fit in this many
  # MiB, else read again each epoch (a large training set would fill the accelerator's memory).
  config.precise_bn_cache_mb = 2048
  # A dataset prepared with `radjax prepare` is kept in memory when its decoded images fit in this
  # many MiB, else streamed from disk every epoch, shuffled in a buffer of this many images.
  config.cache_mb = 4096
  config.shuffle_buffer = 2048
  # Precise BN's forward passes take up to this many images each: whole batches, each with its own
  # statistics (the result does not change), in fewer passes. 0: per backend, as measured (one
  # batch per pass on CPU, 64 images on GPUs, where 13 batch-5 passes are launch-bound).
  config.precise_bn_images_per_call = 0
  config.fine_tune = "all"         # "all" (the paper), "head", or "from:mixedN"

  # Loss: a function of radjax/training/losses.py ("cross_entropy", the paper's; "focal") or your
  # own as "package.module:function" (examples/custom_loss.py). Validation always reports plain
  # cross-entropy, so runs with different losses compare.
  config.loss = "cross_entropy"
  config.label_smoothing = 0.0     # targets y (1 - e) + e / classes (2 for a sigmoid logit)
  config.focal_gamma = 2.0         # focal loss' (1 - p)^gamma; 0 is cross-entropy
  # Batch mixing inside the jitted step (radjax/training/mixing.py): each image blended with
  # (mixup) or pasted into (cutmix) another of its batch, lam ~ Beta(alpha, alpha); 0 = off. Use
  # one at a time. Training loss and accuracy are then against both labels, weighted by lam.
  config.mixup_alpha = 0.0
  config.cutmix_alpha = 0.0

  # Optimisation: Adam as in the paper (Keras defaults).
  config.learning_rate = 1e-4
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  # Loss weight per class, as Keras' class_weight: "" (none, the paper), "balanced" (scikit-learn's
  # n / (classes * n_c) from the training counts) or one weight per class, "w0,w1".
  config.class_weight = ""
  # Training order: "shuffle" (every image once per epoch, the paper's) or "balanced" (each batch
  # position draws a class with equal chance, exactly balanced per epoch; within a class, its
  # images in a seeded order, repeated as needed: minority images recur with new augmentations).
  # Use it or class_weight, not both.
  config.sampling = "shuffle"
  config.batch_size = 5            # global batch, split over all devices
  config.eval_batch_size = 10
  config.num_epochs = 20
  config.seed = 0

  # Checkpoints and logging.
  config.keep_checkpoints = 3      # the latest few; the best by val AUC is kept as well
  config.distributed = False       # multi-host: call jax.distributed.initialize() first
  config.compilation_cache = "~/.cache/radjax/jax"  # JAX persistent compilation cache ("" = off)
  return config
