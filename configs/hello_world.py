"""The paper's experiment (Lakhani et al. 2018), exactly: InceptionV3 + ImageNet weights, 299x299,
batch 5, 20 epochs, Adam 1e-4 (0.9, 0.999, 1e-8), dropout 0.5, the whole network fine-tuned, and
ImageDataGenerator augmentation (rotation 20, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip).

  radjax train --config configs/hello_world.py --workdir runs/hello \
      --config.data_dir ../shared/datasets/open_i_abd_vs_cxr

Fixes the seed notebook's flaws on purpose: validation images are not augmented, pixels are
scaled to [-1, 1] (what the ImageNet weights were trained on) and the seed is fixed.
Resizing is Keras' flow_from_directory default, pixel for pixel: Pillow's nearest neighbour,
squashed to 299x299.

Expected: the paper reports 100% validation accuracy with ImageNet weights. Without network
access, `--config.weights=none` (random init) trains 20 epochs in roughly 10-15 minutes on a 2-core
CPU and separates the 10 validation images (docs/results.md has the measured run).
"""

from radjax.configs import default


def get_config():
  config = default.get_config()
  config.resize_method = "nearest"
  return config
