"""What a run predicts, from its classes.

"binary": the paper's head, one sigmoid logit, the probability of the second class (sorted class
names). "multiclass": N >= 3 classes (or 2 when asked), N softmax logits, cross-entropy, the
decision is the most probable class. The task follows from the number of classes unless
`config.task` names one; checkpoints record it with the class names.
"""

from __future__ import annotations

import numpy as np

from radjax.errors import UserError

TASKS = ("binary", "multiclass")


def resolve(task: str, class_names, where) -> str:
  """`config.task` ("auto", "binary", "multiclass") for these classes; refuses what cannot be."""
  n = len(class_names)
  if n < 2:
    raise UserError(f"{where}: found {n} class(es) {list(class_names)}; a classifier needs at "
                    "least two")
  if task == "auto":
    return "binary" if n == 2 else "multiclass"
  if task == "binary" and n != 2:
    raise UserError(f"{where}: --config.task=binary needs exactly two classes, found {n} "
                    f"({', '.join(class_names)}); use --config.task=multiclass (or auto)")
  return task


def num_outputs(task: str, class_names) -> int:
  return 1 if task == "binary" else len(class_names)


def of_logits(logits) -> str:
  """A task from the logits' shape: (n,) binary, (n, N) multiclass."""
  return "binary" if np.ndim(logits) == 1 else "multiclass"
