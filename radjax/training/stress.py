"""How a trained run's answers change when a film is framed or acquired otherwise (`radjax
stress`).

Every image of a split is scored clean and under each perturbation family of
`radjax.data.perturb` at each of its strengths (seeded: the same command gives the same films).
A perturbation is applied to the decoded film, before the run's own border cropping, resizing and
value range, as a differently framed or acquired film would arrive. Per family and strength:
AUC and accuracy with bootstrap intervals (as `radjax evaluate`), the flip rate (decisions that
differ from the clean image's, at the run's operating point) and the mean |change| of probability
(`radjax.metrics.robustness`); and the images whose decisions flip most.

Writes stress.json, stress.png (flip rate and AUC against strength, a line per family) and
contact.png (the split's first image under every perturbation, with its score under each).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from radjax.data import datasets, images, listing, perturb, preprocess
from radjax.errors import UserError
from radjax.metrics import robustness, stress_figures
from radjax.training import decisions

WORST_SHOWN = 5  # images listed as flipping most


def _threshold(workdir, trained) -> tuple[object, str]:
  """(threshold logit(s) the run decides at, where it came from); multiclass: (0, argmax)."""
  _, cut, source = decisions.run_decision(workdir, trained)
  if trained.task == "multilabel":
    return np.array([cut[n] for n in trained.class_names]), source
  return (0.0 if cut is None else cut), source


def stress_workdir(workdir, data_dir=None, split: str = "val", which: str = "best",
                   out_dir=None, families: str = "all", seed: int = 0,
                   batch_size: int = 16, progress: bool | None = None) -> dict:
  """Scores the split clean and under every (family, strength); writes stress.json, stress.png
  and contact.png to `out_dir` (default: the workdir). Returns what stress.json holds."""
  import jax
  from tqdm import tqdm

  from radjax.training import evaluation, run as run_lib

  chosen = perturb.select(families)
  trained = run_lib.load(workdir, which)
  config = trained.config
  data_dir, source = evaluation.data_dir_of(trained, data_dir)
  split = listing.SPLIT_ALIASES.get(split.lower(), split.lower())
  folders = datasets.list_dataset(data_dir, splits=(split,), dicom_voi=config.dicom_voi)
  examples = folders.splits.get(split)
  if not examples:
    raise UserError(f"{data_dir}: no images in a {split.upper()} split")
  if folders.class_names != trained.class_names:
    raise UserError(f"{data_dir}: classes {folders.class_names} differ from the checkpoint's "
                    f"{trained.class_names}")
  cut, cut_source = _threshold(workdir, trained)
  conditions = [(family, k) for family in chosen for k in range(len(family.strengths))]
  batch_size = max(batch_size // jax.device_count(), 1) * jax.device_count()
  scores = []  # per image: (1 + conditions, outputs) logits
  contact = []  # the first image under every condition, for the contact sheet
  for index, example in enumerate(tqdm(examples, desc="radjax stress", unit="image",
                                       disable=None if progress is None else not progress)):
    pixels = images.read_image(example.path, config.dicom_voi)
    high_bit = images.bit_depth(example.path) > 8
    films = [pixels] + [perturb.perturb(pixels, family, k, seed, index)
                        for family, k in conditions]
    if index == 0:
      contact = films
    inputs = np.stack([preprocess.film_input(film, config, high_bit) for film in films])
    logits = []
    for start in range(0, len(inputs), batch_size):
      batch = preprocess.pad_batch({"image": inputs[start:start + batch_size],
                                    "label": np.zeros(len(inputs[start:start + batch_size]),
                                                      np.int32)}, batch_size)
      logits.append(trained.steps.logits_of(trained.variables, [batch])[0])
    scores.append(np.concatenate(logits))
  scores = np.stack(scores, axis=1)  # (1 + conditions, images, ...)
  labels = np.array([e.label for e in examples])
  clean = scores[0]
  rows = [{"family": "clean", "group": "", "strength": None, "level": 0, "label": "clean",
           "moderate": True, **robustness.condition(clean, clean, labels, trained.task, cut,
                                                    config.seed)}]
  for (family, k), logits in zip(conditions, scores[1:]):
    rows.append({"family": family.name, "group": family.group, "strength": family.strengths[k],
                 "level": k + 1, "label": family.label(family.strengths[k]),
                 "moderate": k == family.moderate,
                 **robustness.condition(clean, logits, labels, trained.task, cut, config.seed)})
  paths = [e.path for e in examples]
  result = {"workdir": str(workdir), "checkpoint": which, "epoch": trained.epoch,
            "task": trained.task, "class_names": trained.class_names, "split": split,
            "data_dir": str(data_dir), "data_dir_from": source, "seed": seed,
            "decision": cut_source, "threshold_logit": np.asarray(cut).tolist(),
            "images": paths, "conditions": rows, "worst": _worst(rows[1:], paths)}
  out = pathlib.Path(out_dir or workdir)
  out.mkdir(parents=True, exist_ok=True)
  written = [out / "stress.json", out / "stress.png", out / "contact.png"]
  result["written"] = [str(p) for p in written]
  stress_figures.plot_stress(rows, written[1], f"{split.upper()} under perturbations, epoch {trained.epoch}")
  stress_figures.contact_sheet(contact, scores[:, 0], [None, *conditions], trained.task,
                               trained.class_names, written[2], paths[0])
  from radjax.metrics import classification

  written[0].write_text(json.dumps(classification.json_safe(result), indent=2))
  return result


def _worst(rows: list[dict], paths: list[str]) -> list[dict]:
  """The images whose decisions flip under the most conditions (ties: the larger change), each
  with the condition that changed it most."""
  flips = np.array([r["image_flips"] for r in rows])  # (conditions, images)
  change = np.array([r["image_changes"] for r in rows])
  order = sorted(range(len(paths)), key=lambda i: (-flips[:, i].sum(), -change[:, i].max()))
  worst = []
  for i in order[:WORST_SHOWN]:
    if not flips[:, i].any():
      break
    top = int(np.argmax(change[:, i]))
    worst.append({"path": paths[i], "flipped_conditions": int((flips[:, i] > 0).sum()),
                  "of": len(rows), "largest_change": float(change[top, i]),
                  "under": f"{rows[top]['family']} {rows[top]['label']}"})
  return worst
