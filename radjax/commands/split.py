"""`radjax split`: one folder per class -> TRAIN/VAL(/TEST) class folders, stratified and seeded.

The work (choosing, copying, the manifest) is `radjax.data.splitting`'s; this prints its summary.
"""

from __future__ import annotations

from radjax.data import splitting


def split_dataset(src, dst, val: int, seed: int, folds: int = 0, test: int = 0,
                  group_by: str = "") -> dict:
  """The command: `splitting.split_dataset` (copies SRC/<class>/* into DST and writes the
  manifest; returns the counts the summary prints)."""
  return splitting.split_dataset(src, dst, val=val, seed=seed, folds=folds, test=test,
                                 group_by=group_by)


def format_summary(result: dict, dst) -> str:
  """One line per split for the command line."""
  lines = [f"Split into {dst}:"]
  for split, per_class in result["counts"].items():
    detail = ", ".join(f"{cls} {n}" for cls, n in per_class.items())
    lines.append(f"  {splitting.SPLIT_FOLDERS[split]:<5} {sum(per_class.values()):>5}  ({detail})")
  folds = f", {result['folds']} cross-validation folds" if result["folds"] else ""
  groups = f", {result['groups']} groups kept whole" if result.get("groups") else ""
  lines.append(f"Manifest: {result['manifest']}{folds}{groups}")
  return "\n".join(lines)
