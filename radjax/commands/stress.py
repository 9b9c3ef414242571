"""`radjax stress`: the console table of how a trained run's answers change when a film is
framed or acquired otherwise. The test itself, which writes stress.json, stress.png and
contact.png, is `radjax.training.stress`.
"""

from __future__ import annotations


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


