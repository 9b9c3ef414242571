"""`radjax evaluate`: the text of a checkpoint's metrics on a split, with their intervals, the
confusion matrix and the operating point. The evaluation itself, which writes metrics.json,
roc.png, calibration.png and the operating point, is `radjax.training.evaluation`.
"""

from __future__ import annotations

from radjax.metrics import classification as metrics
from radjax.metrics.summary import format_macro, format_per_class, format_summary, with_interval


def _square_matrix(matrix, class_names) -> str:
  width = max(10, *(len(n) for n in class_names))
  rows = [f"  {'':>{width}} " + " ".join(f"{n:>{width}}" for n in class_names)]
  rows += [f"  {name:>{width}} " + " ".join(f"{v:>{width}}" for v in row)
           for name, row in zip(class_names, matrix)]
  return "\n".join(rows)


def _matrix(matrix, class_names) -> str:
  (tn, fp), (fn, tp) = matrix
  a, b = class_names
  return (f"  {'':>10} {a:>10} {b:>10}\n  {a:>10} {tn:>10} {fp:>10}\n  {b:>10} {fn:>10} {tp:>10}")


def _format_label_points(point: dict, names) -> list[str]:
  """A multilabel run's operating points: each label's threshold and its figures there."""
  width = max(len(n) for n in names)
  lines = [f"operating points ({point['rule']}, each label's own, chosen on VAL at epoch "
           f"{point['epoch']}), over the images where the label is known:"]
  for name in names:
    chosen, at = point["labels"].get(name), point["on_this_split"].get(name)
    if chosen is None:
      lines.append(f"  {name:<{width}}  probability 0.5 (VAL holds one value of this label: "
                   "nothing to choose from)")
    elif at is None:
      lines.append(f"  {name:<{width}}  probability {chosen['threshold']:.4f} (no image of this "
                   "split has this label known)")
    else:
      (tn, fp), (fn, tp) = at["confusion_matrix"]
      lines.append(f"  {name:<{width}}  probability {chosen['threshold']:.4f}  sensitivity "
                   f"{with_interval(at['sensitivity'], at['intervals']['sensitivity'])}  "
                   f"specificity {with_interval(at['specificity'], at['intervals']['specificity'])}"
                   f"  (TP {tp} FN {fn} TN {tn} FP {fp})")
  return lines


def format_metrics(result: dict) -> str:
  names = result["class_names"]
  if result.get("task") in ("multiclass", "multilabel"):
    multilabel = result["task"] == "multilabel"
    decision = "each label at probability 0.5" if multilabel else "the most probable class"
    lines = [
        f"Data: {result['data_dir']} (from {result['data_dir_from']})",
        f"{result['split'].upper()} ({result['count']} images, checkpoint epoch {result['epoch']}), "
        f"{decision}: loss {result['loss']:.4f}  accuracy {result['accuracy']:.3f}"
        f"{' (of the known labels)' if multilabel else ''}  macro AUC {result['auc']:.3f}  "
        f"macro sensitivity {result['sensitivity']:.3f}  macro specificity "
        f"{result['specificity']:.3f}",
        "per label (over the images where it is known):" if multilabel
        else "per class, one vs rest:", format_per_class(result, names)]
    lines[2:2] = ["  " + format_macro(result, result["intervals"], result["exact_intervals"])]
    if not multilabel:
      lines += ["confusion matrix (rows true, columns predicted):",
                _square_matrix(result["confusion_matrix"], names)]
    if result.get("operating_point"):
      lines += _format_label_points(result["operating_point"], names)
    if result.get("operating_point_note"):
      lines.append(f"operating points: {result['operating_point_note']}")
    lines.append(
        f"95% intervals: bootstrap ({metrics.BOOTSTRAP_RESAMPLES} seeded resamples of these "
        "images, each with all its labels); in brackets each label's, stratified over its known "
        "images. Brier and ECE: each label's calibration over its known images" if multilabel
        else f"95% intervals: stratified bootstrap ({metrics.BOOTSTRAP_RESAMPLES} seeded resamples "
        "of these images, each class' count kept), exact binomial for accuracy; in brackets each "
        "class' one-vs-rest AUC interval. Brier and ECE: each class' probability against its "
        "frequency, one vs rest. No operating point (the decision is the most probable class)")
    return "\n".join(lines)
  lines = [f"Data: {result['data_dir']} (from {result['data_dir_from']})",
           f"{result['split'].upper()} ({result['count']} images, checkpoint epoch "
           f"{result['epoch']}), at probability 0.5: loss {result['loss']:.4f}",
           "  " + format_summary(result, result["intervals"], names, result["exact_intervals"]),
           "confusion matrix (rows true, columns predicted):", _matrix(result["confusion_matrix"], names),
           f"calibration: Brier score {result['calibration']['brier']:.4f}  expected calibration "
           f"error {result['calibration']['ece']:.4f}"]
  point = result.get("operating_point")
  if point and point["on_this_split"]["confusion_matrix"] == result["confusion_matrix"]:
    lines.append(f"operating point ({point['rule']}, chosen on VAL at epoch {point['epoch']}): "
                 f"probability {point['threshold']:.4f}: the same decisions as at 0.5 on these "
                 "images (the table above)")
  elif point:
    at = point["on_this_split"]
    lines += [f"operating point ({point['rule']}, chosen on VAL at epoch {point['epoch']}): "
              f"probability {point['threshold']:.4f}",
              "  " + format_summary({**at, "auc": result["auc"]},
                                    {**point["intervals"], "auc": result["intervals"]["auc"]}, names,
                                    point["exact_intervals"]),
              _matrix(at["confusion_matrix"], names)]
  if result.get("operating_point_note"):
    lines.append(f"operating point: {result['operating_point_note']}")
  lines.append(f"95% intervals: stratified bootstrap ({metrics.BOOTSTRAP_RESAMPLES} seeded "
               f"resamples of these {result['count']} images; it collapses on a perfect result) "
               "and exact binomial (Clopper-Pearson) for the proportions")
  return "\n".join(lines)
