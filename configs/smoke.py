"""Tiny run for tests and a first try: 75x75, 2 epochs, random init.

  radjax train --config configs/smoke.py --workdir runs/smoke \
      --config.data_dir ../shared/datasets/open_i_abd_vs_cxr

Expected: about a minute on 2 CPU cores; accuracy is not meaningful at this size.
"""

from radjax.configs import default


def get_config():
  config = default.get_config()
  config.image_size = 75
  config.num_epochs = 2
  config.weights = "none"
  return config
