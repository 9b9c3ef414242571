"""The measurements of scripts/benchmark.py, one module each; the entry script parses the flags
and calls them in order.

  records.py        every figure as a JSON line (emit), the machine and commit it ran on
  step.py           radjax' train step: how it is built, fed and timed (all parts time alike)
  profile.py        where a train step's time goes, by kind of XLA op
  peers_keras.py    Keras `train_on_batch`, the paper's own framework
  peers_torch.py    PyTorch torchvision inception_v3, eager and `torch.compile`d
  pipeline.py       the tf.data input pipeline against Keras' ImageDataGenerator
  epoch.py          hello_world epochs end to end, here or on another backend
  predict.py        `radjax predict` of one file, as a user runs it
  compile_cache.py  the first step's compile time, cold and warm persistent cache
  onednn.py         the CPU step with XLA's oneDNN recipe, and whether it keeps the numbers
  xla_flags.py      the CPU step under each XLA flag of that recipe alone
  children.py       the child processes the parts above start (XLA reads XLA_FLAGS once)
  tables.py         the markdown tables printed from the JSON lines

Nothing here imports JAX or radjax at import time: `--table` needs neither, and radjax must set
its XLA defaults before JAX starts a backend (the entry script imports it first).
"""

import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmark.py"  # what children run
REPO = SCRIPT.parents[1]
DATASET = REPO.parent / "shared" / "datasets" / "open_i_abd_vs_cxr"
