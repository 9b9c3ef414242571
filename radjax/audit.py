"""`radjax audit`: what is in a class-folder dataset, before anyone trains on it.

Reports counts per split and class, image sizes, formats, unreadable and non-image files, exact
duplicates (SHA-256 of the file bytes) and near duplicates (perceptual hash of the decoded image).
A duplicate whose copies lie in different splits is leakage: the model would be validated on an
image it was trained on, so those are listed first and marked.

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

from radjax import data, images

# Perceptual-hash (64-bit pHash) Hamming distance at or below which two images are near duplicates.
# On the shared Open-I set, JPEG re-encoding, halving the size, brightness +2 and contrast x1.2 move
# the hash by at most 6 bits, while the closest pair of distinct radiographs (different patients'
# PA chest films) is 10 bits apart. Chest films all look alike at 8x8 DCT resolution, so a larger
# threshold would start flagging different patients.
NEAR_DUPLICATE_MAX_DISTANCE = 6
# A class with fewer images than this, or below this fraction of the split's largest class, is too
# small to train or to measure on.
MIN_CLASS_IMAGES = 5
MIN_CLASS_FRACTION = 0.10
UNSPLIT = "all"  # the one "split" of a folder without TRAIN/VAL folders
SPLIT_ORDER = ("train", "val", "test", UNSPLIT)
HASH_ROWS_PER_CHUNK = 256  # pairwise distances are computed this many rows at a time (memory)
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


@dataclasses.dataclass(frozen=True)
class _Hashed:
  path: str  # relative to the data directory, "/"-separated
  split: str
  sha256: str
  phash: int


def _layout(root: pathlib.Path) -> dict[str, pathlib.Path]:
  splits = data.find_splits(root)  # raises UserError for a missing directory
  return {s: splits[s] for s in SPLIT_ORDER if s in splits} or {UNSPLIT: root}


def _to_gray_pil(pixels: np.ndarray):
  from PIL import Image

  return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).convert("L")


def perceptual_hash(pixels: np.ndarray) -> int:
  """64-bit pHash of a decoded [0, 255] image (as `images.read_image` returns it), in grayscale."""
  import imagehash

  return int(str(imagehash.phash(_to_gray_pil(pixels))), 16)


def hamming_pairs(hashes, max_distance: int) -> list[tuple[int, int, int]]:
  """(i, j, distance) for every i < j whose 64-bit hashes differ in at most `max_distance` bits."""
  hashes = np.asarray(hashes, np.uint64)
  pairs = []
  for start in range(0, len(hashes), HASH_ROWS_PER_CHUNK):
    xor = hashes[start:start + HASH_ROWS_PER_CHUNK, None] ^ hashes[None, :]
    distance = _POPCOUNT8[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(-1, dtype=np.int64)
    for i, j in zip(*np.nonzero(distance <= max_distance)):
      if start + i < j:
        pairs.append((int(start + i), int(j), int(distance[i, j])))
  return pairs


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
    elif len(per_class) > 2:
      warnings.append(f"{name}/ has {len(per_class)} class folders ({', '.join(per_class)}); "
                      "radjax train, evaluate and predict handle two classes only so far")
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
    for class_dir in data.class_dirs(split_dir):
      files, others = images.list_image_files(class_dir)
      listed += [(split, class_dir.name, path) for path in files]
      non_images += [{"path": rel(path), "reason": reason} for path, reason in others]
    if split != UNSPLIT:  # the root of an unsplit set may hold a README; a split folder may not
      non_images += [{"path": rel(p), "reason": "file outside a class folder"}
                     for p in data.stray_files(split_dir)]

  counts = {split: {d.name: 0 for d in data.class_dirs(split_dir)}
            for split, split_dir in layout.items()}
  sizes = {split: {"width": [], "height": []} for split in layout}
  formats = {split: collections.Counter() for split in layout}
  unreadable, hashed = [], []
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
    sha = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    hashed.append(_Hashed(rel(path), split, sha, perceptual_hash(pixels)))

  by_sha = collections.defaultdict(list)
  for h in hashed:
    by_sha[h.sha256].append(h)
  exact = sorted((_duplicate(group, sha256=sha) for sha, group in by_sha.items() if len(group) > 1),
                 key=_leakage_first)
  close = hamming_pairs([h.phash for h in hashed], NEAR_DUPLICATE_MAX_DISTANCE)
  near = sorted((_duplicate([hashed[i], hashed[j]], distance=d) for i, j, d in close
                 if hashed[i].sha256 != hashed[j].sha256),  # identical bytes: already listed above
                key=_leakage_first)

  folder = {split: rel(split_dir) if split_dir != root else "."
            for split, split_dir in layout.items()}
  warnings = _class_warnings(counts, folder)
  if UNSPLIT not in layout and "val" not in layout:
    warnings.append("no VAL/ folder: `radjax train` needs TRAIN/ and VAL/")
  leaks = sum(d["across_splits"] for d in exact + near)
  if leaks:
    warnings.insert(0, f"LEAKAGE: {leaks} duplicate(s) span different splits (listed first below)")
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
      "near_duplicate_max_distance": NEAR_DUPLICATE_MAX_DISTANCE,
      "warnings": warnings,
  }


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
  lines += ["", f"Warnings: {len(report['warnings']) or 'none'}"]
  lines += [f"  {w}" for w in report["warnings"]]
  return "\n".join(lines)
