"""`radjax predict`: class probabilities for PNG, JPEG or DICOM files, one line per image, as
text, JSON or CSV. The scoring is `radjax.training.scoring` (shared with stress, serve and
export), the threshold `radjax.training.decisions`; this module writes what they return.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json

from radjax.training.scoring import Prediction


def format_text(results: list[Prediction], class_names) -> str:
  width = max((len(r.path) for r in results), default=0)
  lines = []
  for r in results:
    if r.error:
      lines.append(f"{r.path:<{width}}  ERROR  {r.error}")
    else:
      spread = "" if r.probability_sd is None else f" +- {r.probability_sd:.4f}"
      if r.probabilities is None:
        shown = f"p({class_names[1]})={r.probability:.4f}{spread}"
      elif r.probabilities_sd is not None:  # multilabel with TTA: every label's own spread
        shown = "  ".join(f"p({n})={p:.4f} +- {r.probabilities_sd[n]:.4f}"
                          for n, p in r.probabilities.items())
      else:  # every class; the spread is the predicted class' probability's
        shown = "  ".join(f"p({n})={p:.4f}{spread if n == r.label else ''}"
                          for n, p in r.probabilities.items())
      lines.append(f"{r.path:<{width}}  {shown}  {r.label}")
  return "\n".join(lines)


def format_json(results: list[Prediction], class_names, threshold: float | None = 0.5) -> str:
  """`threshold` None: a multiclass run (the most probable class decides); a dict: a multilabel
  run's threshold per label."""
  return json.dumps({"class_names": list(class_names), "threshold": threshold,
                     "predictions": [dataclasses.asdict(r) for r in results]}, indent=2)


def format_csv(results: list[Prediction], class_names, multiclass: bool | None = None) -> str:
  """`multiclass`: a probability column per class (multiclass and multilabel runs; the class
  column holds a multilabel run's labels joined by "+"); None: inferred from the results (a run
  whose every file failed: say it)."""
  out = io.StringIO()
  writer = csv.writer(out)
  if multiclass is None:
    multiclass = any(r.probabilities for r in results)
  if multiclass:  # a probability column per class
    writer.writerow(["path", *(f"probability_{n}" for n in class_names), "class", "error",
                     "probability_sd"])
    for r in results:
      shown = [f"{r.probabilities[n]:.6f}" for n in class_names] if r.probabilities else [
          ""] * len(class_names)
      writer.writerow([r.path, *shown, r.label or "", r.error or "",
                       "" if r.probability_sd is None else f"{r.probability_sd:.6f}"])
    return out.getvalue()
  writer.writerow(["path", f"probability_{class_names[1]}", "class", "error", "probability_sd"])
  for r in results:
    writer.writerow([r.path, "" if r.probability is None else f"{r.probability:.6f}",
                     r.label or "", r.error or "",
                     "" if r.probability_sd is None else f"{r.probability_sd:.6f}"])
  return out.getvalue()


