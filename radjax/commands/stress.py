"""`radjax stress`: how a trained run's answers change when a film is framed or acquired otherwise.

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
import logging
import pathlib

import numpy as np

from radjax.data import datasets, images, listing, perturb, preprocess
from radjax.errors import UserError
from radjax.metrics import robustness

log = logging.getLogger("radjax")

WORST_SHOWN = 5  # images listed as flipping most
CONTACT_CELL_INCHES = 1.7
CONTACT_FAMILIES_PER_ROW = 2  # a family's strengths side by side, two families a row


def _threshold(workdir, trained) -> tuple[object, str]:
  """(threshold logit(s) the run decides at, where it came from); multiclass: (0, argmax)."""
  from radjax.commands import predict

  _, cut, source = predict.run_decision(workdir, trained)
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

  from radjax.commands import evaluate
  from radjax.training import run as run_lib

  chosen = perturb.select(families)
  trained = run_lib.load(workdir, which)
  config = trained.config
  data_dir, source = evaluate.data_dir_of(trained, data_dir)
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
  _plot_stress(rows, written[1], f"{split.upper()} under perturbations, epoch {trained.epoch}")
  _contact_sheet(contact, scores[:, 0], [None, *conditions], trained, written[2], paths[0])
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


def _interval(value, interval) -> str:
  return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def format_stress(result: dict) -> str:
  """The console table: a row per family and strength, the worst images, what the columns mean."""
  head = (f"{'family':<15}{'group':<12}{'strength':<18}{'AUC [95% CI]':<24}"
          f"{'accuracy [95% CI]':<24}{'flips':>7}{'mean |dp|':>11}")
  lines = [f"Data: {result['data_dir']} (from {result['data_dir_from']}), "
           f"{result['split'].upper()}: {len(result['images'])} images, checkpoint epoch "
           f"{result['epoch']}, decisions at {result['decision']}", head, "-" * len(head)]
  for r in result["conditions"]:
    mark = "*" if r["moderate"] and r["family"] != "clean" else " "
    lines.append(f"{r['family']:<15}{r['group']:<12}{r['label'] + mark:<18}"
                 f"{_interval(r['auc'], r['auc_interval']):<24}"
                 f"{_interval(r['accuracy'], r['accuracy_interval']):<24}"
                 f"{r['flip_rate']:>7.1%}{r['mean_abs_change']:>11.3f}")
  moderate = [r for r in result["conditions"][1:] if r["moderate"]
              and r["group"] in ("framing", "burned-in")]
  if moderate:
    top = max(moderate, key=lambda r: r["flip_rate"])
    lines.append(f"Framing and burned-in content at moderate strength (*): at most "
                 f"{top['flip_rate']:.1%} of decisions flip ({top['family']} {top['label']})")
  if result["worst"]:
    lines.append("Images flipping most:")
    lines += [f"  {w['path']}: {w['flipped_conditions']} of {w['of']} conditions; largest change "
              f"{w['largest_change']:.3f} under {w['under']}" for w in result["worst"]]
  else:
    lines.append("No decision flipped under any condition.")
  lines.append("flips: share of decisions that differ from the clean image's; mean |dp|: mean "
               "absolute change of the decided probability; 95% intervals: bootstrap over these "
               "images, as radjax evaluate")
  return "\n".join(lines)


def _plot_stress(rows: list[dict], path, title: str) -> None:
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


def _score_text(logits, trained) -> str:
  from radjax.metrics.probabilities import sigmoid, softmax

  names = trained.class_names
  if trained.task == "binary":
    return f"p({names[1]})={float(sigmoid(logits)):.3f}"
  if trained.task == "multiclass":
    p = softmax(logits)
    return f"{names[int(np.argmax(p))]} {float(p.max()):.3f}"
  return " ".join(f"{n[:6]}={float(v):.2f}" for n, v in zip(names, sigmoid(logits)))


def _contact_sheet(films, logits, conditions, trained, path, source) -> None:
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
    ax.set_title(f"{name}\n{_score_text(score, trained)}", fontsize=7)
  fig.suptitle(f"{pathlib.Path(source).name} under every perturbation (as decoded, before "
               "the run's cropping and resizing)", fontsize=9)
  fig.savefig(path, dpi=80)
