"""What a run predicts, from its classes.

"binary": the paper's head, one sigmoid logit, the probability of the second class (sorted class
names). "multiclass": N >= 3 classes (or 2 when asked), N softmax logits, cross-entropy, the
decision is the most probable class. "multilabel": K independent findings per image (a CSV with
one 1/0/blank column per label), K sigmoid logits, binary cross-entropy over the known labels, a
decision per label at probability 0.5. The task follows from the data unless `config.task` names
one; checkpoints record it with the class (label) names.
"""

from __future__ import annotations

import numpy as np

from radjax.errors import UserError

TASKS = ("binary", "multiclass", "multilabel")


def resolve(task: str, class_names, where, multilabel: bool = False) -> str:
  """`config.task` ("auto" or one of TASKS) for these classes, or these labels when the data is
  `multilabel`; refuses what cannot be."""
  n = len(class_names)
  if multilabel:
    if task not in ("auto", "multilabel"):
      raise UserError(f"{where}: one 1/0/blank column per label is multilabel data; "
                      f"--config.task={task} needs one label column (path,label)")
    return "multilabel"
  if task == "multilabel":
    raise UserError(f"{where}: --config.task=multilabel needs a CSV with one 1/0/blank column "
                    "per label (path,FINDING_A,FINDING_B,...)")
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
  """A single-label task from the logits' shape: (n,) binary, (n, N) multiclass (multilabel
  logits have the shape of multiclass ones: pass the task where it can be multilabel)."""
  return "binary" if np.ndim(logits) == 1 else "multiclass"
