"""`radjax explain`: Grad-CAM and occlusion maps of files, as figures (OUT/<name>.explain.png).
The maps themselves are `radjax.training.explanation`.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from radjax.data import images
from radjax.errors import UserError
from radjax.training.explanation import LAYERS, Explanation, explain_file


def save_figure(explanation: Explanation, class_names, out) -> None:
  """The displayed image, the Grad-CAM overlay and the occlusion map, side by side."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(12, 4.4), layout="constrained")
  shown = np.clip(explanation.pixels, 0, 255).astype(np.uint8)
  explained = explanation.explained or explanation.label
  if explanation.probabilities is None:
    shown_p = f"p({class_names[1]}) = {explanation.probability:.4f}"
    hidden = f"red hides evidence for {class_names[1]}, blue for {class_names[0]}"
  else:
    shown_p = ", ".join(f"p({n}) = {p:.3f}" for n, p in explanation.probabilities.items())
    drops = "logit" if explanation.multilabel else "log-probability"
    hidden = f"red hides evidence for {explained} (its {drops} drops)"
  fig.suptitle(f"{pathlib.Path(explanation.path).name}: {shown_p} -> {explanation.label}")
  if explanation.probabilities is None:
    drop_unit = f"drop of the logit of p({class_names[1]}) when hidden"
  else:
    drop_unit = f"drop of {explained}'s {'logit' if explanation.multilabel else 'log-probability'}" \
                " when hidden"
  panels = [("image", None, ""),
            (f"Grad-CAM ({explanation.layer}): evidence for {explained}", explanation.gradcam,
             # sum over channels of activation x mean gradient of the score: the score's units
             "evidence, logit units (ReLU of activation x mean gradient)"),
            (f"occlusion: {hidden}", explanation.occlusion, drop_unit)]
  for k, (name, heat, unit) in enumerate(panels):
    ax = fig.add_subplot(1, 3, k + 1)
    ax.imshow(shown)
    if heat is not None:
      limit = float(np.abs(heat).max()) or 1.0
      cmap, low = ("jet", 0.0) if k == 1 else ("coolwarm", -limit)
      shown_heat = ax.imshow(heat, cmap=cmap, alpha=0.45, vmin=low, vmax=limit)
      bar = fig.colorbar(shown_heat, ax=ax, shrink=0.8)
      bar.set_label(unit, fontsize=7)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
  fig.savefig(out, dpi=100)


def figure_paths(paths, out_dir, suffix: str = ".explain.png") -> list[pathlib.Path]:
  """One output per input, never two alike: each input's place relative to the folder all inputs
  share, so TRAIN/abd/a.png and VAL/abd/a.png, or patientA/IM1.dcm and patientB/IM1.dcm, keep
  apart (one file: OUT/a.explain.png). Two inputs of one stem in one folder (a.png, a.dcm) keep
  their extension."""
  if not paths:
    return []
  resolved = [pathlib.Path(p).resolve() for p in paths]
  common = pathlib.Path(os.path.commonpath([p.parent for p in resolved]))
  stems = [p.relative_to(common).with_suffix("") for p in resolved]
  names = [stem if stems.count(stem) == 1 else p.relative_to(common)
           for stem, p in zip(stems, resolved)]
  return [pathlib.Path(out_dir) / f"{name}{suffix}" for name in names]


def explain_files(workdir, inputs, out_dir, which: str = "best", layer: str = "mixed10",
                  target_class: str | None = None):
  """Writes OUT/<name>.explain.png per input, the maps for `target_class` (default: each image's
  predicted class); returns (explanations, errors as (path, why), class names)."""
  from radjax.training import run as run_lib, scoring

  if layer not in LAYERS:
    raise UserError(f"--layer {layer}: expected one of {', '.join(LAYERS)}")
  trained = run_lib.load(workdir, which)
  if target_class is not None and target_class not in trained.class_names:
    raise UserError(f"--class {target_class}: not a class of this run "
                    f"({', '.join(trained.class_names)})")
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  done, errors = [], []
  found = list(dict.fromkeys(scoring.expand(inputs)))  # a file named twice is explained once
  figures = dict(zip((p for p, error in found if not error),
                     figure_paths([p for p, error in found if not error], out_dir)))
  for path, error in found:
    if error:
      errors.append((str(path), error))
      continue
    try:
      explanation = explain_file(trained, path, layer, target_class=target_class)
    except images.ImageReadError as e:
      errors.append((str(path), str(e).removeprefix(f"{path}: ")))
      continue
    figures[path].parent.mkdir(parents=True, exist_ok=True)
    save_figure(explanation, trained.class_names, figures[path])
    explanation.figure = figures[path]
    done.append(explanation)
  return done, errors, trained.class_names
