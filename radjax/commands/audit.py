"""`radjax audit`: what is in a class-folder dataset, before anyone trains on it.

The scan (counts, sizes, formats, unreadable files, duplicates and leakage across splits, each
file's non-anatomical properties) is `radjax.data.audit`'s; the shortcut audit (how well each
property alone predicts the class) is `radjax.metrics.shortcuts`'. This joins them into one
report, with a warning per shortcut, and writes it as text.
"""

from __future__ import annotations

from radjax.data import audit as dataset_audit
from radjax.metrics import shortcuts


def audit(data_dir, dicom_voi: str = "auto", progress: bool = True) -> dict:
  """Inspects every file under `data_dir`; returns a JSON-serialisable report (see format_report).

  Paths in the report are relative to `data_dir`. Counts are readable images per split and class.
  """
  report = dataset_audit.audit(data_dir, dicom_voi, progress, shortcuts=shortcuts.shortcut_report)
  # Kept apart from `warnings` (dataset structure and leakage); format_report prints both.
  report["shortcut_warnings"] = [_shortcut_warning(f, report["shortcut_classes"])
                                 for f in report["shortcuts"]
                                 if f["auc"] >= shortcuts.SHORTCUT_AUC]
  return report


def _shortcut_warning(feature: dict, classes: list[str]) -> str:
  auc = "AUC" if len(classes) == 2 else "macro one-vs-rest AUC"
  return (f"SHORTCUT: '{feature['feature']}' alone predicts {' vs '.join(classes)} with "
          f"cross-validated {auc} {feature['auc']:.3f} ({feature['detail']})")


# Said once after the shortcut warnings, not after each.
SHORTCUT_ADVICE = ("A model may learn such a feature instead of the anatomy and fail on images "
                   "where it differs: make it uniform across classes (--config.crop_borders=auto "
                   "and acquisition augmentation, configs/robust.py), measure its effect with "
                   "`radjax stress`, look with `radjax explain`, and test on an external set.")


def _table(rows: list[list[str]], text_columns: int = 1) -> list[str]:
  """Aligned rows: the first `text_columns` columns left-aligned, the numbers right-aligned."""
  widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
  return ["  " + "  ".join(c.ljust(w) if k < text_columns else c.rjust(w)
                           for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def _duplicate_line(entry: dict, joiner: str) -> str:
  where = "/".join(entry["splits"])
  tag = f"!! LEAKAGE across {where}" if entry["across_splits"] else f"within {where}"
  distance = f"  (distance {entry['distance']})" if "distance" in entry else ""
  return f"  {tag}: {joiner.join(entry['files'])}{distance}"


def _size(stats: dict) -> str:
  if stats["min"] is None:
    return "-"
  return f"{stats['min']} / {stats['median']:g} / {stats['max']}"


def _shortcut_lines(report: dict) -> list[str]:
  title = "What predicts the label besides the anatomy"
  if "shortcuts" not in report:
    return []
  if report["shortcut_skipped"]:
    return [f"{title}: skipped ({report['shortcut_skipped']})"]
  threshold = report["shortcut_auc_threshold"]
  lines = [f"{title} (each feature alone, {report['shortcut_folds']}-fold cross-validated ROC AUC "
           f"for {' vs '.join(report['shortcut_classes'])}, all splits pooled; 0.5 = chance, "
           f"!! = AUC >= {threshold:g})"]
  rows = [["feature", "AUC", "", "detail"]]
  rows += [[f["feature"], f"{f['auc']:.3f}", "!!" if f["auc"] >= threshold else "", f["detail"]]
           for f in report["shortcuts"]]
  widths = [max(len(r[k]) for r in rows) for k in range(3)]
  lines += ["  " + "  ".join((r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]),
                              r[3])).rstrip() for r in rows]
  return lines


def format_report(report: dict) -> str:
  """The report as text for a terminal."""
  splits = report["splits"]
  classes = sorted({c for s in splits.values() for c in s["classes"]})
  lines = [f"Dataset {report['data_dir']}", ""]
  rows = [["split", "folder", *classes, "total"]]
  rows += [[name, s["folder"], *(str(s["classes"].get(c, "-")) for c in classes), str(s["images"])]
           for name, s in splits.items()]
  lines += ["Readable images per split and class", *_table(rows, text_columns=2), ""]
  rows = [["split", "width min / median / max", "height min / median / max"]]
  rows += [[name, _size(s["width"]), _size(s["height"])] for name, s in splits.items()]
  lines += ["Image sizes (pixels)", *_table(rows), ""]
  lines.append("Formats")
  lines += [f"  {name}: " + (", ".join(f"{k} x{v}" for k, v in s["formats"].items()) or "-")
            for name, s in splits.items()]
  for key, title in (("unreadable", "Unreadable files"), ("non_images", "Non-image files")):
    entries = report[key]
    lines += ["", f"{title}: {len(entries) or 'none'}"]
    lines += [f"  {e['path']}: {e['reason']}" for e in entries]
  exact, near = report["exact_duplicates"], report["near_duplicates"]
  lines += ["", f"Exact duplicates (identical bytes): {len(exact) or 'none'}"]
  lines += [_duplicate_line(e, " = ") for e in exact]
  threshold = report["near_duplicate_max_distance"]
  lines += ["", f"Near duplicates (perceptual hash distance <= {threshold}, exact duplicates "
            f"excluded): {len(near) or 'none'}"]
  lines += [_duplicate_line(e, " ~ ") for e in near]
  lines += ["", *_shortcut_lines(report)]
  shared = report.get("shared_identifiers", [])
  if shared:
    lines += ["", f"Patients and studies shared across splits: {len(shared)}"]
    lines += [f"  !! LEAKAGE {e['attribute']} {e['value']} in {'/'.join(e['splits'])}: "
              f"{', '.join(e['files'])}" for e in shared]
  warnings = report["warnings"] + report.get("shortcut_warnings", [])
  lines += ["", f"Warnings: {len(warnings) or 'none'}"]
  lines += [f"  {w}" for w in warnings]
  if report.get("shortcut_warnings"):
    lines.append(SHORTCUT_ADVICE)
  return "\n".join(lines)
