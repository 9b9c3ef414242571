"""`radjax cv`: stratified k-fold cross-validation, every fold a normal, resumable training run.

The folds are planned by `radjax.data.folds` (duplicates and one patient's images kept in one
fold) and run and summarized by `radjax.training.cross_validation` (the workdir's layout, and why
the held-out predictions come from each fold's final epoch, are described there). This command
adds the summary's outputs and text:

    WORKDIR/cv.json                      the summary (written by the cross-validation)
    WORKDIR/cv_roc.png                   the pooled out-of-fold ROC curves, per seed
    WORKDIR/held_out.csv                 every held-out prediction
"""

from __future__ import annotations

import csv

import numpy as np

from radjax.metrics import classification as metrics
from radjax.training import cross_validation
from radjax.training.cross_validation import FOLD_METRICS, pooled_predictions

SUMMARY = cross_validation.SUMMARY  # written by the cross-validation; named with the outputs below
ROC_FIGURE = "cv_roc.png"
PREDICTIONS_CSV = "held_out.csv"


def cross_validate(config, workdir, folds: int, seeds: int = 1, manifest=None) -> dict:
  """Runs (or continues) the cross-validation (`cross_validation.cross_validate`), then writes
  its ROC figure and held-out CSV beside the summary; returns the summary."""

  def outputs(summary, results, plan, workdir):
    plot_cv_roc(summary, results, workdir / ROC_FIGURE)
    _write_predictions(plan, results, workdir / PREDICTIONS_CSV)

  return cross_validation.cross_validate(config, workdir, folds, seeds, manifest, outputs=outputs)


def _cell(x: float) -> str:
  return "  n/a" if x is None or np.isnan(x) else f"{x:.3f}"


def format_summary(summary: dict) -> str:
  """The per-fold table, then the pooled figures per seed and over seeds."""
  lines = [f"Cross-validation: {summary['folds']} folds x {len(summary['seeds'])} seed(s), "
           f"{summary['images']} images ({summary['source']}); "
           f"{len(summary['groups_kept_whole'])} duplicate/patient group(s) kept whole",
           f"{'seed':>4} {'fold':>4} {'n':>4}  " + "  ".join(f"{k:>11}" for k in FOLD_METRICS)]
  for seed, s in summary["per_seed"].items():
    for fold, m in s["folds"].items():
      lines.append(f"{seed:>4} {fold:>4} {m['count']:>4}  "
                   + "  ".join(f"{_cell(m[k]):>11}" for k in FOLD_METRICS))
    p, ci = s["pooled"], s["intervals"]
    lines.append(f"{seed:>4} {'all':>4} {p['count']:>4}  "
                 + "  ".join(f"{_cell(p[k]):>11}" for k in FOLD_METRICS) + "   (pooled)")
    lines.append(f"{'':>14}  " + "  ".join(f"[{_cell(ci[k][0])},{_cell(ci[k][1])}]"
                                           .rjust(11) for k in FOLD_METRICS)
                 + "   (95% bootstrap)")
    exact = s["exact_intervals"]
    lines.append(f"{'':>14}  {'':>11}  " + "  ".join(
        f"[{_cell(exact[k][0])},{_cell(exact[k][1])}]".rjust(11) if k in exact else " " * 11
        for k in FOLD_METRICS[1:]) + "   (95% exact binomial)")
    if "per_class" in s:
      from radjax.metrics.summary import format_per_class

      per = ("per label, over its known images" if "known" in s["per_class"][0]
             else "per class one vs rest")
      lines.append(f"  seed {seed}, pooled, {per} (in brackets: 95% bootstrap intervals):\n"
                   + format_per_class(s, summary["class_names"]))
  over = summary["pooled_over_seeds"]["auc"]
  spread = "" if np.isnan(over["sd"]) else f" +- {over['sd']:.3f} (sd over {over['n']} seeds)"
  first = next(iter(summary["per_seed"].values()))
  macro = ("" if "per_class" not in first else "macro per-label " if "known" in
           first["per_class"][0] else "macro one-vs-rest ")
  lines.append(f"Out-of-fold pooled {macro}ROC AUC: {_cell(over['mean'])}{spread}; held-out "
               "predictions from each fold's final epoch")
  return "\n".join(lines)


def plot_cv_roc(summary: dict, results: dict[int, dict[int, dict]], path) -> None:
  """The pooled out-of-fold ROC curve of every seed."""
  from sklearn import metrics as skm

  from radjax.metrics import figures as plots

  names = summary["class_names"]
  first = next(iter(results.values()))
  if np.ndim(pooled_predictions(first)[1]) == 2:  # multilabel: a curve per label and seed
    curves = []
    for seed, by_fold in results.items():
      logits, labels = pooled_predictions(by_fold)
      for k, name in enumerate(names):
        known = labels[:, k] >= 0
        if len(np.unique(labels[known, k])) == 2:
          auc = summary["per_seed"][str(seed)]["per_class"][k]["auc"]
          curves.append((labels[known, k] == 1, logits[known, k],
                         f"seed {seed}: {name} (AUC {auc:.3f})"))
    plots._plot_roc_curves(curves, path, f"{summary['folds']}-fold CV, out-of-fold pooled")
    return
  if np.ndim(pooled_predictions(first)[0]) == 2:  # multiclass: one-vs-rest curves, every seed
    curves = []
    for seed, by_fold in results.items():
      logits, labels = pooled_predictions(by_fold)
      for c, name in enumerate(names):
        if 0 < np.sum(labels == c) < len(labels):
          log_odds = logits[:, c] - np.logaddexp.reduce(np.delete(logits, c, axis=1), axis=1)
          auc = summary["per_seed"][str(seed)]["per_class"][c]["auc"]
          curves.append((labels == c, log_odds, f"seed {seed}: {name} vs rest (AUC {auc:.3f})"))
    plots._plot_roc_curves(curves, path, f"{summary['folds']}-fold CV, out-of-fold pooled")
    return
  fig = plots._figure(5, 5)
  ax = fig.add_subplot()
  for seed, by_fold in results.items():
    logits, labels = pooled_predictions(by_fold)
    fpr, tpr, _ = skm.roc_curve(labels, logits)
    s = summary["per_seed"][str(seed)]
    lo, hi = s["intervals"]["auc"]
    ax.plot(fpr, tpr, lw=2, label=f"seed {seed}: AUC {s['pooled']['auc']:.3f} "
                                  f"[{lo:.3f}, {hi:.3f}]")
  ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="chance")
  ax.set(xlabel=f"False positive rate (1 - specificity, {names[0]})",
         ylabel=f"True positive rate (sensitivity, {names[1]})",
         title=f"{summary['folds']}-fold CV, out-of-fold pooled", xlim=(0, 1), ylim=(0, 1.02))
  ax.legend(loc="lower right", fontsize="small")
  fig.savefig(path, dpi=120)


def _write_predictions(plan: dict, results, path) -> None:
  """held_out.csv: binary, the second class' probability and the logit; multiclass, every class'
  probability and the most probable class."""
  names = plan["class_names"]
  logits, labels = pooled_predictions(next(iter(results.values())))
  multilabel, multiclass = np.ndim(labels) == 2, np.ndim(logits) == 2
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    if multilabel:  # each label's truth (blank: unknown), probability, and the decision
      writer.writerow(["seed", "fold", "path", *names, *(f"p_{n}" for n in names), "predicted"])
    else:
      writer.writerow(["seed", "fold", "path", "class"] + (
          [f"p_{n}" for n in names] + ["predicted"] if multiclass
          else [f"p_{names[1]}", "logit"]))
    for seed, by_fold in results.items():
      for fold, r in sorted(by_fold.items()):
        for p, lab, z in zip(r["paths"], r["labels"], r["logits"]):
          if multilabel:
            probability = metrics.sigmoid(np.asarray(z))
            above = [n for n, q in zip(names, probability) if q > 0.5]
            writer.writerow([seed, fold, p, *("" if v < 0 else v for v in lab),
                             *(f"{q:.6f}" for q in probability), "+".join(above) or "none"])
            continue
          if multiclass:
            probability = metrics.softmax(np.asarray(z)[None])[0]
            scores = [f"{q:.6f}" for q in probability] + [names[int(np.argmax(probability))]]
          else:
            scores = [f"{metrics.sigmoid(z):.6f}", f"{z:.6g}"]
          writer.writerow([seed, fold, p, names[lab], *scores])
