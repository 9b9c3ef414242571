"""`radjax audit`: what is in a class-folder dataset, before anyone trains on it.

Reports counts per split and class, image sizes, formats, unreadable and non-image files, exact
duplicates (SHA-256 of the file bytes) and near duplicates (perceptual hash of the decoded image).
A duplicate whose copies lie in different splits is leakage: the model would be validated on an
image it was trained on, so those are listed first and marked.

Shortcut audit ("what predicts the label besides the anatomy"): for each property of a file that
is not its anatomy (size, aspect ratio, format, file size, brightness, the outer frame where
borders and burned-in text live, DICOM equipment attributes), the cross-validated ROC AUC of
predicting the class from that property alone, over every readable image of every split pooled.
A property with an AUC near 1 separates the classes by itself, and a model may learn it instead of
the anatomy. DICOM Patient ID / Study Instance UID values found in more than one split are leakage.

The folder rules are data.py's: split folders TRAIN/VAL/TEST (case-insensitive aliases), one folder
per class. A folder without split folders is audited as one unsplit class-folder set (what
`radjax split` takes).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import pathlib
import sys

import numpy as np

from radjax.data import duplicates, images, listing

# A class with fewer images than this, or below this fraction of the split's largest class, is too
# small to train or to measure on.
MIN_CLASS_IMAGES = 5
MIN_CLASS_FRACTION = 0.10
UNSPLIT = "all"  # the one "split" of a folder without TRAIN/VAL folders
SPLIT_ORDER = ("train", "val", "test", UNSPLIT)
# Shortcut audit: a feature whose cross-validated AUC reaches this separates the classes by itself.
SHORTCUT_AUC = 0.9
SHORTCUT_MAX_FOLDS = 5
SHORTCUT_SEED = 0
SHORTCUT_TREE_DEPTH = 2  # one feature, a shallow tree: a threshold or a band, not a memorised list
FRAME_FRACTION = 0.05  # the outer frame: this fraction of the height (top, bottom), width (sides)
DICOM_ATTRIBUTES = ("Manufacturer", "ManufacturerModelName", "StationName", "InstitutionName",
                    "PhotometricInterpretation", "PixelSpacing", "BodyPartExamined")
DICOM_IDENTIFIERS = ("PatientID", "StudyInstanceUID")
MISSING = "(missing)"
# (feature key, name in the report, numeric?) for every file; DICOM attributes are added when the
# set holds DICOM files.
FILE_FEATURES = (("width", "width", True), ("height", "height", True),
                 ("aspect", "aspect ratio (width / height)", True),
                 ("size", "width x height", False), ("format", "file format", False),
                 ("mode", "image mode", False), ("bits", "bit depth", False),
                 ("file_bytes", "file size (bytes)", True),
                 ("mean", "intensity mean", True), ("std", "intensity std", True),
                 ("frame_mean", "outer 5% frame: intensity mean", True),
                 ("frame_std", "outer 5% frame: intensity std", True))


@dataclasses.dataclass(frozen=True)
class _Hashed:
  path: str  # relative to the data directory, "/"-separated
  split: str
  sha256: str
  phash: int


def _layout(root: pathlib.Path) -> dict[str, pathlib.Path]:
  splits = listing.find_splits(root)  # raises UserError for a missing directory
  return {s: splits[s] for s in SPLIT_ORDER if s in splits} or {UNSPLIT: root}


def intensity_features(gray: np.ndarray) -> dict:
  """Mean and std of a [0, 255] gray image, and of its outer frame (FRAME_FRACTION of each side)."""
  gray = np.asarray(gray, np.float64)
  rows, cols = gray.shape
  band_r = max(1, int(round(FRAME_FRACTION * rows)))
  band_c = max(1, int(round(FRAME_FRACTION * cols)))
  frame = np.ones(gray.shape, bool)
  frame[band_r:rows - band_r, band_c:cols - band_c] = False
  return {"mean": float(gray.mean()), "std": float(gray.std()),
          "frame_mean": float(gray[frame].mean()), "frame_std": float(gray[frame].std())}


def _dicom_header_values(path) -> dict:
  """The DICOM_ATTRIBUTES and DICOM_IDENTIFIERS of a file's header, as strings ("" if absent)."""
  import pydicom

  ds = pydicom.dcmread(path, stop_before_pixels=True)
  values = {}
  for keyword in DICOM_ATTRIBUTES + DICOM_IDENTIFIERS:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
      values[keyword] = ""
    elif keyword == "PixelSpacing":
      spacing = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and \
          not isinstance(value, str) else [value]
      try:
        values[keyword] = "\\".join(f"{float(v):g}" for v in spacing)
      except (TypeError, ValueError):
        values[keyword] = str(value).strip()
    else:
      values[keyword] = str(value).strip()
  return values


def _duplicate(files: list[_Hashed], **extra) -> dict:
  splits = sorted({f.split for f in files}, key=SPLIT_ORDER.index)
  return {"files": [f.path for f in files], "splits": splits, "across_splits": len(splits) > 1,
          **extra}


def _leakage_first(entry: dict):
  return (not entry["across_splits"], entry["files"])


def _stats(values: list[int]) -> dict:
  if not values:
    return {"min": None, "median": None, "max": None}
  return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}


def _class_warnings(counts: dict[str, dict[str, int]], folder: dict[str, str]) -> list[str]:
  warnings = []
  reference = "train" if "train" in counts else next(iter(counts), None)
  for split, per_class in counts.items():
    name = folder[split]
    if reference and split != reference:
      for missing in sorted(set(counts[reference]) - set(per_class)):
        warnings.append(f"{name}/ has no '{missing}' folder (a class of {folder[reference]}/)")
      for extra in sorted(set(per_class) - set(counts[reference])):
        warnings.append(f"{name}/{extra}/ is not a class of {folder[reference]}/")
    if len(per_class) < 2:
      warnings.append(f"{name}/ has {len(per_class)} class folder(s); a classifier needs two or "
                      "more")
    largest = max(per_class.values(), default=0)
    for cls, n in per_class.items():
      if n < MIN_CLASS_IMAGES or n < MIN_CLASS_FRACTION * largest:
        warnings.append(f"{name}/{cls}/ has only {n} readable image(s) (largest class in {name}/: "
                        f"{largest}; warning below {MIN_CLASS_IMAGES} or "
                        f"{MIN_CLASS_FRACTION:.0%} of the largest)")
  return warnings


def audit(data_dir, dicom_voi: str = "auto", progress: bool = True) -> dict:
  """Inspects every file under `data_dir`; returns a JSON-serialisable report (see format_report).

  Paths in the report are relative to `data_dir`. Counts are readable images per split and class.
  """
  root = pathlib.Path(data_dir)
  layout = _layout(root)

  def rel(path) -> str:
    return pathlib.Path(path).relative_to(root).as_posix()

  listed, non_images = [], []
  for split, split_dir in layout.items():
    for class_dir in listing.class_dirs(split_dir):
      files, others = images.list_image_files(class_dir)
      listed += [(split, class_dir.name, path) for path in files]
      non_images += [{"path": rel(path), "reason": reason} for path, reason in others]
    if split != UNSPLIT:  # the root of an unsplit set may hold a README; a split folder may not
      non_images += [{"path": rel(p), "reason": "file outside a class folder"}
                     for p in listing.stray_files(split_dir)]

  counts = {split: {d.name: 0 for d in listing.class_dirs(split_dir)}
            for split, split_dir in layout.items()}
  sizes = {split: {"width": [], "height": []} for split in layout}
  formats = {split: collections.Counter() for split in layout}
  unreadable, hashed, records = [], [], []
  from tqdm import tqdm

  for split, cls, path in tqdm(listed, desc="radjax audit: hashing", unit="file", file=sys.stderr,
                               disable=None if progress else True):
    try:
      pixels = images.read_image(path, dicom_voi)
      info = images.describe(path)
    except images.ImageReadError as e:
      unreadable.append({"path": rel(path), "reason": str(e).removeprefix(f"{path}: ")})
      continue
    except Exception as e:  # decodable pixels but a header describe() cannot read
      unreadable.append({"path": rel(path),
                         "reason": f"unreadable header ({type(e).__name__}: {e})"})
      continue
    counts[split][cls] += 1
    sizes[split]["width"].append(info["width"])
    sizes[split]["height"].append(info["height"])
    formats[split][f"{info['format']} {info['mode']} {info['bits']}-bit"] += 1
    content = pathlib.Path(path).read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    gray = duplicates.to_gray_pil(pixels)
    hashed.append(_Hashed(rel(path), split, sha, duplicates.phash_of_gray(gray)))
    records.append(_file_record(path, rel(path), split, cls, info, len(content), gray))

  by_sha = collections.defaultdict(list)
  for h in hashed:
    by_sha[h.sha256].append(h)
  exact = sorted((_duplicate(group, sha256=sha) for sha, group in by_sha.items() if len(group) > 1),
                 key=_leakage_first)
  close = duplicates.hamming_pairs([h.phash for h in hashed], duplicates.NEAR_DUPLICATE_MAX_DISTANCE)
  near = sorted((_duplicate([hashed[i], hashed[j]], distance=d) for i, j, d in close
                 if hashed[i].sha256 != hashed[j].sha256),  # identical bytes: already listed above
                key=_leakage_first)

  folder = {split: rel(split_dir) if split_dir != root else "."
            for split, split_dir in layout.items()}
  warnings = _class_warnings(counts, folder)
  if UNSPLIT not in layout and "val" not in layout:
    warnings.append("no VAL/ folder: `radjax train` needs TRAIN/ and VAL/")
  shared_ids = _shared_identifiers(records)
  for keyword in reversed(DICOM_IDENTIFIERS):
    values = [e for e in shared_ids if e["attribute"] == keyword]
    if values:
      warnings.insert(0, f"LEAKAGE: {len(values)} DICOM {keyword} value(s) occur in more than one "
                      "split (listed under 'Patients and studies shared across splits'): the model "
                      "is validated on patients or studies it was trained on")
  leaks = sum(d["across_splits"] for d in exact + near)
  if leaks:
    warnings.insert(0, f"LEAKAGE: {leaks} duplicate(s) span different splits (listed first below)")
  specs = list(FILE_FEATURES)
  if any(r["format"] == "DICOM" for r in records):
    specs += [(k, f"DICOM {k}", False) for k in DICOM_ATTRIBUTES]
  shortcuts = shortcut_audit(records, specs)
  shortcut_warnings = [_shortcut_warning(f, shortcuts["classes"]) for f in shortcuts["features"]
                       if f["auc"] >= SHORTCUT_AUC]
  return {
      "data_dir": str(root.resolve()),
      "splits": {split: {"folder": folder[split], "classes": counts[split],
                         "images": sum(counts[split].values()),
                         "width": _stats(sizes[split]["width"]),
                         "height": _stats(sizes[split]["height"]),
                         "formats": dict(formats[split].most_common())}
                 for split in layout},
      "unreadable": unreadable,
      "non_images": non_images,
      "exact_duplicates": exact,
      "near_duplicates": near,
      "near_duplicate_max_distance": duplicates.NEAR_DUPLICATE_MAX_DISTANCE,
      "shortcuts": shortcuts["features"],
      "shortcut_folds": shortcuts["folds"],
      "shortcut_classes": shortcuts["classes"],
      "shortcut_skipped": shortcuts["skipped"],
      "shortcut_auc_threshold": SHORTCUT_AUC,
      "shared_identifiers": shared_ids,
      "warnings": warnings,
      # Kept apart from `warnings` (dataset structure and leakage); format_report prints both.
      "shortcut_warnings": shortcut_warnings,
  }


def _file_record(path, rel_path: str, split: str, cls: str, info: dict, n_bytes: int, gray) -> dict:
  """The shortcut-audit features of one readable file (`gray`: its decoded image, PIL mode L)."""
  record = {"path": rel_path, "split": split, "class": cls, "width": info["width"],
            "height": info["height"], "aspect": info["width"] / info["height"],
            "size": f"{info['width']}x{info['height']}", "format": info["format"],
            "mode": info["mode"], "bits": info["bits"], "file_bytes": n_bytes,
            **intensity_features(np.asarray(gray))}
  header = {}
  if info["format"] == "DICOM":
    try:
      header = _dicom_header_values(path)
    except Exception:  # describe() read it; anything odd here only loses these features
      header = {}
  for keyword in DICOM_ATTRIBUTES:
    record[keyword] = header.get(keyword) or MISSING
  for keyword in DICOM_IDENTIFIERS:
    record[keyword] = header.get(keyword, "")
  return record


def _shortcut_warning(feature: dict, classes: list[str]) -> str:
  auc = "AUC" if len(classes) == 2 else "macro one-vs-rest AUC"
  return (f"SHORTCUT: '{feature['feature']}' alone predicts {' vs '.join(classes)} with "
          f"cross-validated {auc} {feature['auc']:.3f} ({feature['detail']})")


# Said once after the shortcut warnings, not after each.
SHORTCUT_ADVICE = ("A model may learn such a feature instead of the anatomy and fail on images "
                   "where it differs: make it uniform across classes (--config.crop_borders=auto "
                   "and acquisition augmentation, configs/robust.py), measure its effect with "
                   "`radjax stress`, look with `radjax explain`, and test on an external set.")


def _cv_scores_numeric(x: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
  """Out-of-fold class probabilities (n, classes) from a shallow tree trained on the one feature
  `x`."""
  from sklearn.model_selection import cross_val_predict
  from sklearn.tree import DecisionTreeClassifier

  tree = DecisionTreeClassifier(max_depth=SHORTCUT_TREE_DEPTH, random_state=SHORTCUT_SEED)
  return cross_val_predict(tree, x.reshape(-1, 1), y, cv=folds, method="predict_proba")


def _cv_scores_categorical(x: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
  """Out-of-fold target encoding (n, classes): each held-out file scores each class' rate among
  the files with its value in the other folds (smoothed toward their overall rate by one
  pseudo-count; an unseen value gets that rate). Each row sums to one."""
  classes = int(y.max()) + 1
  scores = np.empty((len(y), classes))
  for train, test in folds.split(x.reshape(-1, 1), y):
    prior = np.bincount(y[train], minlength=classes) / len(train)
    members, totals = collections.defaultdict(lambda: np.zeros(classes)), collections.Counter()
    for value, label in zip(x[train], y[train]):
      totals[value] += 1
      members[value][label] += 1
    scores[test] = [(members[v] + prior) / (totals[v] + 1) if v in totals else prior
                    for v in x[test]]
  return scores


def _cv_auc(y: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of out-of-fold class probabilities: of the second class' for two classes, else the
  macro mean of every class' one-vs-rest AUC."""
  from sklearn.metrics import roc_auc_score

  if scores.shape[1] == 2:
    return float(roc_auc_score(y, scores[:, 1]))
  return float(roc_auc_score(y, scores, multi_class="ovr", average="macro"))


def _number(value: float) -> str:
  return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _per_class_detail(x: np.ndarray, y: np.ndarray, names: list[str], numeric: bool) -> str:
  """Numeric: each class's median and range. Categorical: the value whose share differs most
  between the classes, with its count in each."""
  if numeric:
    parts = []
    for label, name in enumerate(names):
      values = x[y == label].astype(np.float64)
      parts.append(f"{name} median {_number(np.median(values))} "
                   f"({_number(values.min())}..{_number(values.max())})")
    return "; ".join(parts)
  totals = [int((y == label).sum()) for label in range(len(names))]
  per_class = [collections.Counter(x[y == label].tolist()) for label in range(len(names))]

  def spread(value):
    shares = [c[value] / n for c, n in zip(per_class, totals)]
    return max(shares) - min(shares)

  value = max(sorted(set(x.tolist())), key=spread)
  return f"{value}: " + ", ".join(f"{name} {c[value]}/{n}"
                                  for name, c, n in zip(names, per_class, totals))


def shortcut_audit(records: list[dict], feature_specs) -> dict:
  """Cross-validated ROC AUC of each feature alone for the class label (three or more classes:
  the macro one-vs-rest AUC).

  records: one dict per readable image, with "class" and every key of `feature_specs`
  ((key, name, numeric) triples). Returns {"classes", "folds", "features" (sorted by AUC, highest
  first) or "skipped" (why)}.
  """
  from sklearn.model_selection import StratifiedKFold

  names = sorted({r["class"] for r in records})
  result = {"classes": names, "folds": None, "features": [], "skipped": None}
  counts = collections.Counter(r["class"] for r in records)
  if len(names) < 2:
    result["skipped"] = "fewer than two classes"
    return result
  smallest = min(counts.values())
  if smallest < 2:
    result["skipped"] = f"class '{min(counts, key=counts.get)}' has {smallest} image; " \
                        "cross-validation needs at least 2 per class"
    return result
  k = min(SHORTCUT_MAX_FOLDS, smallest)
  folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=SHORTCUT_SEED)
  result["folds"] = k
  y = np.array([names.index(r["class"]) for r in records])
  for key, name, numeric in feature_specs:
    raw = [r[key] for r in records]
    x = np.array(raw, np.float64) if numeric else np.array([str(v) for v in raw], object)
    if len(set(x.tolist())) < 2:
      value = x[0] if not numeric else f"{x[0]:.4g}"
      result["features"].append({"feature": name, "auc": 0.5, "constant": True,
                                 "detail": f"constant ({value})"})
      continue
    scores = (_cv_scores_numeric if numeric else _cv_scores_categorical)(x, y, folds)
    result["features"].append({"feature": name, "auc": round(_cv_auc(y, scores), 4),
                               "constant": False,
                               "detail": _per_class_detail(x, y, names, numeric)})
  result["features"].sort(key=lambda f: -f["auc"])  # stable: ties keep the feature order
  return result


def _shared_identifiers(records: list[dict]) -> list[dict]:
  """DICOM_IDENTIFIERS values that occur in more than one split."""
  shared = []
  for keyword in DICOM_IDENTIFIERS:
    where = collections.defaultdict(list)
    for r in records:
      if r.get(keyword):
        where[r[keyword]].append(r)
    for value, group in sorted(where.items()):
      splits = sorted({r["split"] for r in group}, key=SPLIT_ORDER.index)
      if len(splits) > 1:
        shared.append({"attribute": keyword, "value": value, "splits": splits,
                       "files": [r["path"] for r in group]})
  return shared


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
