"""The stress test's figures: stress.png (flip rate and AUC against strength, a line per family)
and contact.png (one film under every perturbation, with its score under each).

A condition is `None` (the clean film) or (family, strength index), where a family has a `name`,
`strengths` and a `label(strength)` (`radjax.data.perturb.Family`)."""

from __future__ import annotations

import pathlib

import numpy as np

CONTACT_CELL_INCHES = 1.7
CONTACT_FAMILIES_PER_ROW = 2  # a family's strengths side by side, two families a row


def plot_stress(rows: list[dict], path, title: str) -> None:
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 4.5), layout="constrained")
  flips_ax, auc_ax = fig.subplots(1, 2)
  families = dict.fromkeys(r["family"] for r in rows[1:])
  styles = {"framing": "-", "burned-in": "--", "acquisition": ":"}
  for name in families:
    own = [r for r in rows[1:] if r["family"] == name]
    style = styles[own[0]["group"]]
    levels = [r["level"] for r in own]
    flips_ax.plot(levels, [r["flip_rate"] for r in own], style, marker="o", label=name)
    auc_ax.plot([0] + levels, [rows[0]["auc"]] + [r["auc"] for r in own], style, marker="o",
                label=name)
  top = max([1] + [r["level"] for r in rows])
  flips_ax.set_xticks(range(1, top + 1))
  auc_ax.set_xticks(range(0, top + 1))
  flips_ax.set(xlabel="strength (1 = mild)", ylabel="flip rate (decisions changed)",
               title="Decisions that flip", ylim=(-0.02, 1.02))
  auc_ax.set(xlabel="strength (0 = clean, 1 = mild)", ylabel="AUC", title="AUC", ylim=(0, 1.02))
  auc_ax.legend(fontsize=7, ncols=2, loc="lower left", title="framing -, burned-in --, "
                "acquisition :", title_fontsize=7)
  fig.suptitle(title)
  fig.savefig(path, dpi=110)


def _score_text(logits, task: str, names) -> str:
  from radjax.metrics.probabilities import sigmoid, softmax

  if task == "binary":
    return f"p({names[1]})={float(sigmoid(logits)):.3f}"
  if task == "multiclass":
    p = softmax(logits)
    return f"{names[int(np.argmax(p))]} {float(p.max()):.3f}"
  return " ".join(f"{n[:6]}={float(v):.2f}" for n, v in zip(names, sigmoid(logits)))


def contact_sheet(films, logits, conditions, task: str, class_names, path, source) -> None:
  """The clean film, then each family's strengths in a row (two families a row), the film as
  perturbed (before the run's cropping and resizing), titled with the strength and its score."""
  from matplotlib.figure import Figure

  families = list(dict.fromkeys(c[0].name for c in conditions[1:]))
  per_family = max([1] + [len(c[0].strengths) for c in conditions[1:]])
  per_row = min(CONTACT_FAMILIES_PER_ROW, max(len(families), 1))
  rows, columns = 1 + -(-len(families) // per_row), per_family * per_row
  fig = Figure(figsize=(columns * CONTACT_CELL_INCHES, rows * CONTACT_CELL_INCHES + 0.4),
               layout="constrained")
  axes = np.array(fig.subplots(rows, columns, squeeze=False))
  for ax in axes.ravel():
    ax.axis("off")
  for film, score, condition in zip(films, logits, conditions):
    if condition is None:
      row, column, name = 0, 0, "clean"
    else:
      family, k = condition
      i = families.index(family.name)
      row, column = 1 + i // per_row, (i % per_row) * per_family + k
      name = f"{family.name}: {family.label(family.strengths[k])}"
    ax = axes[row, column]
    ax.imshow(np.clip(film, 0, 255).astype(np.uint8))
    ax.set_title(f"{name}\n{_score_text(score, task, class_names)}", fontsize=7)
  fig.suptitle(f"{pathlib.Path(source).name} under every perturbation (as decoded, before "
               "the run's cropping and resizing)", fontsize=9)
  fig.savefig(path, dpi=80)
