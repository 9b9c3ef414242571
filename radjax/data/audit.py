"""What is in a class-folder dataset, before anyone trains on it (`radjax audit`'s scan).

Counts per split and class, image sizes, formats, unreadable and non-image files, exact
duplicates (SHA-256 of the file bytes) and near duplicates (perceptual hash of the decoded image).
A duplicate whose copies lie in different splits is leakage: the model would be validated on an
image it was trained on, so those are listed first and marked. DICOM Patient ID / Study Instance
UID values found in more than one split are leakage too.

For the shortcut audit, every readable file's properties that are not its anatomy (size, aspect
ratio, format, file size, brightness, the outer frame where borders and burned-in text live, DICOM
equipment attributes) are recorded; `radjax.metrics.shortcuts` scores how well each alone predicts
the class.

The folder rules are `listing`'s: split folders TRAIN/VAL/TEST (case-insensitive aliases), one
folder per class. A folder without split folders is audited as one unsplit class-folder set (what
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


def audit(data_dir, dicom_voi: str = "auto", progress: bool = True, shortcuts=None) -> dict:
  """Inspects every file under `data_dir`; returns a JSON-serialisable report (`radjax audit`
  prints it).

  Paths in the report are relative to `data_dir`. Counts are readable images per split and class.
  `shortcuts(records, feature_specs)`: the report's shortcut entries, from one dict of features per
  readable file and the (key, name, numeric) triples naming them (`radjax audit` passes
  `radjax.metrics.shortcuts.shortcut_report`); without it the report has none.
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
      **(shortcuts(records, specs) if shortcuts is not None else {}),
      "shared_identifiers": shared_ids,
      "warnings": warnings,
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
