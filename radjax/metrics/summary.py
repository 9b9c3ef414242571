"""Metric results as console text: figures with their intervals, one line per class or label."""

from __future__ import annotations

def format_per_class(values: dict, class_names) -> str:
  """One line per class: one-vs-rest AUC, sensitivity and specificity, and its image count (per
  label for multilabel: its positives among the images whose label is known)."""
  width = max(len(n) for n in class_names)

  def count(m):
    return (f"{m['count']} positive of {m['known']} known" if "known" in m
            else f"{m['count']} images")

  def shown(m, key):  # the figure, with its bootstrap interval when evaluate computed one
    interval = m.get("intervals", {}).get(key)
    return f"{m[key]:.3f}" + (f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")

  def calibrated(m):  # evaluate's per-class calibration, when it computed one
    c = m.get("calibration")
    return f"  Brier {c['brier']:.3f} ECE {c['ece']:.3f}" if c else ""

  return "\n".join(
      f"  {name:<{width}}  AUC {shown(m, 'auc')}  sensitivity {shown(m, 'sensitivity')}  "
      f"specificity {shown(m, 'specificity')}  ({count(m)}){calibrated(m)}"
      for name, m in zip(class_names, values["per_class"]))


def with_interval(value: float, interval, exact=None) -> str:
  text = f"{value:.3f} (95% CI {interval[0]:.3f}-{interval[1]:.3f}"
  return text + (f"; exact {exact[0]:.3f}-{exact[1]:.3f})" if exact else ")")


def format_summary(values: dict, intervals: dict, class_names, exact: dict | None = None) -> str:
  """AUC, accuracy, sensitivity and specificity, each with its bootstrap interval (and the exact
  binomial one of the proportions, when given)."""
  a, b = class_names
  exact = exact or {}
  return (f"AUC {with_interval(values['auc'], intervals['auc'])}  "
          f"accuracy {with_interval(values['accuracy'], intervals['accuracy'], exact.get('accuracy'))}"
          f"\n  sensitivity ({b}) {with_interval(values['sensitivity'], intervals['sensitivity'], exact.get('sensitivity'))}"
          f"  specificity ({a}) "
          f"{with_interval(values['specificity'], intervals['specificity'], exact.get('specificity'))}")


def format_macro(values: dict, intervals: dict, exact: dict) -> str:
  """A multiclass result's macro AUC, accuracy, macro sensitivity and specificity, each with its
  bootstrap interval (accuracy also with its exact binomial one)."""
  return (f"macro AUC {with_interval(values['auc'], intervals['auc'])}  accuracy "
          f"{with_interval(values['accuracy'], intervals['accuracy'], exact.get('accuracy'))}\n"
          f"  macro sensitivity {with_interval(values['sensitivity'], intervals['sensitivity'])}  "
          f"macro specificity {with_interval(values['specificity'], intervals['specificity'])}")


