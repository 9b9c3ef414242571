"""Cross-validation folds (`radjax cv`'s plan): which image is held out in which fold, per seed.

The images are every labelled image of the data directory: TRAIN/ and VAL/ pooled (TEST/ stays
untouched, for a final test), or one folder per class; the train and val splits of a prepared
dataset or a CSV manifest; or the folds of a `radjax split --folds` manifest. Images that are
exact duplicates (same bytes), near duplicates (perceptual hash within
`duplicates.NEAR_DUPLICATE_MAX_DISTANCE` bits) or of one patient (DICOM PatientID, or a manifest's
patient_id column) form one group, and a group is never split over folds (scikit-learn's
StratifiedGroupKFold), so no fold is validated on an image its model was trained on. Multilabel
CSVs: folds stratified by each image's rarest positive label.
"""

from __future__ import annotations

import collections
import hashlib
import pathlib
import sys

import numpy as np

from radjax.data import duplicates, images, listing, prepared, splitting
from radjax.errors import UserError

MIN_FOLDS = 2
POOLED_SPLITS = ("train", "val")  # TEST/ is never pooled: it is the final, untouched test


def fold_name(seed: int, fold: int) -> str:
  return f"seed_{seed}/fold_{fold}"


def labelled_images(data_dir, dicom_voi: str = "auto"):
  """(class names, [(path relative to data_dir, label)], note) of every labelled image: TRAIN/
  and VAL/ pooled, or the class folders of an unsplit folder. Unreadable files are skipped by the
  listing with a warning naming them."""
  root = pathlib.Path(data_dir)
  if prepared.is_prepared(root):
    return _prepared_images(root)
  if root.suffix.lower() == ".npz":
    raise UserError(f"{root}: cross-validation reads class folders or a CSV manifest (each fold "
                    "links the image files), not pre-decoded arrays")
  if root.suffix.lower() == ".csv":  # a manifest: its train and val rows, or every row
    has_split = "split" in listing.read_manifest(root)[0]
    folders = listing.list_manifest(root, splits=POOLED_SPLITS if has_split else ("train",),
                                    dicom_voi=dicom_voi, pooled=True)
    examples = [e for split in folders.splits.values() for e in split]
    found = [(pathlib.Path(e.path).relative_to(root.parent).as_posix(),
              list(e.label) if folders.multilabel else e.label) for e in examples]
    rows = "train and val rows" if has_split else "rows"
    return folders.class_names, sorted(found), f"the {rows} of {root.name}"
  present = listing.find_splits(root)  # raises for a missing directory
  if present:
    folders = listing.list_folders(root, splits=POOLED_SPLITS, dicom_voi=dicom_voi)
    examples = [e for split in POOLED_SPLITS for e in folders.splits[split]]
    note = ("TRAIN/ and VAL/ pooled" + (f"; {present['test'].name}/ left out (the final test)"
                                        if "test" in present else ""))
    class_names = folders.class_names
    found = [(pathlib.Path(e.path).relative_to(root).as_posix(), e.label) for e in examples]
  else:
    dirs = listing.class_dirs(root)
    class_names = [d.name for d in dirs]
    if len(class_names) < 2:
      raise UserError(f"{root}: found neither TRAIN/ and VAL/ nor two class folders "
                      f"({class_names}); cross-validation needs labelled images")
    found = []
    for label, d in enumerate(dirs):
      files, others = images.list_image_files(d)
      checked = listing.checked_examples([(p, label, "") for p in files], True, dicom_voi)
      others += [c for c in checked if not isinstance(c, listing.Example)]
      for path, reason in others:
        print(f"radjax cv: skipped {path}: {reason}", file=sys.stderr)
      found += [(pathlib.Path(c.path).relative_to(root).as_posix(), label) for c in checked
                if isinstance(c, listing.Example)]
    note = "the class folders"
  return class_names, sorted(found), note


def _prepared_images(root: pathlib.Path):
  """`labelled_images` of a prepared dataset: its train and val examples, by source path."""
  index = prepared.read_index(root)
  if index["format"] != prepared.FORMAT:
    raise UserError(f"{root}: a view of the prepared dataset {index['prepared']} (a fold's "
                    "data?); cross-validate the dataset itself")
  pooled = [s for s in POOLED_SPLITS if s in index["splits"]]

  def label_of(label):  # a multilabel dataset's labels are 1/0/-1 vectors, as a CSV's
    return [int(v) for v in label] if index["multilabel"] else int(label)

  found = [(path, label_of(label)) for s in pooled
           for path, label in zip(index["splits"][s]["paths"], index["splits"][s]["labels"])]
  note = (f"the {' and '.join(pooled)} splits of the prepared dataset {root.name}"
          + ("; its test split left out (the final test)" if "test" in index["splits"] else ""))
  return index["class_names"], sorted(found), note


def check_classes(class_names, where) -> None:
  if len(class_names) < 2:
    raise UserError(f"{where}: found {len(class_names)} class(es) ({', '.join(class_names)}); "
                    "cross-validation needs at least two")


def manifest_images(manifest):
  """(class names, [(path relative to the manifest's folder, label)], {path: fold}) from a
  `radjax split --folds` manifest: its rows with a fold (the TRAIN images)."""
  manifest = pathlib.Path(manifest)
  if not manifest.is_file():
    raise UserError(f"--manifest {manifest}: no such file")
  columns, all_rows = listing.read_manifest(manifest)
  missing = [c for c in splitting.MANIFEST_COLUMNS if c not in columns]
  if missing:
    raise UserError(f"{manifest}: not a `radjax split` manifest (no column {missing[0]!r})")
  rows = [r for _, r in all_rows if r["fold"]]
  if not rows:
    raise UserError(f"{manifest}: no row has a fold; write one with `radjax split --folds K`")
  listing.refuse_near_duplicate_labels([r["class"] for r in rows], manifest)
  class_names = sorted({r["class"] for r in rows})
  check_classes(class_names, manifest)
  found, fold_of = [], {}
  for r in rows:
    relative = listing.manifest_path(r["path"])
    path = manifest.parent / relative
    if not path.is_file():
      raise UserError(f"{manifest}: row {r['path']}: no such file {path}")
    if relative in fold_of:
      raise UserError(f"{manifest}: row {r['path']}: listed twice")
    try:
      fold_of[relative] = int(r["fold"])
    except ValueError:
      raise UserError(f"{manifest}: row {r['path']}: fold {r['fold']!r} is not a number") from None
    found.append((relative, class_names.index(r["class"])))
  return class_names, sorted(found), fold_of


def _identity(path: pathlib.Path, dicom_voi: str) -> tuple[str, int, str]:
  """(SHA-256 of the bytes, perceptual hash, DICOM PatientID or "") of one image."""
  sha = hashlib.sha256(path.read_bytes()).hexdigest()
  phash = duplicates.perceptual_hash(images.read_image(path, dicom_voi))
  from radjax.data import dicom

  return sha, phash, dicom.patient_id(path)


def csv_patients(csv_path) -> dict[str, str]:
  """{path: patient_id} of a CSV manifest's non-empty patient_id cells ({} without the column)."""
  column = splitting.GROUP_COLUMN
  return {listing.manifest_path(r["path"]): r[column]
          for _, r in listing.read_manifest(csv_path)[1] if r.get(column) and r.get("path")}


def prepared_identity(root, paths: list[str]) -> list[tuple[str, int, str]]:
  """`_identity` of each (source) path of a prepared dataset, from its stored pixels and patient
  ids: the source files need not exist any more."""
  where = prepared.locations(root)
  index = prepared.read_index(root)
  hashes = prepared.identities(root, sorted({where[p][0] for p in paths}))
  return [(*hashes[where[p]], index["splits"][where[p][0]]["patient_ids"][where[p][1]])
          for p in paths]


def groups_of(root, paths: list[str], dicom_voi: str = "auto",
              patients: dict[str, str] | None = None,
              identity: list[tuple[str, int, str]] | None = None
              ) -> tuple[list[int], list[list[str]]]:
  """Group index of every path: exact duplicates, near duplicates and one patient's images (DICOM
  PatientID, or `patients`: a manifest's patient_id column) are joined (transitively). Also
  returns the groups of more than one image, for the report. `identity`: each path's (SHA-256,
  perceptual hash, patient), when known (a prepared dataset's), else read from the files."""
  from tqdm import tqdm

  if identity is None:
    identity = [_identity(pathlib.Path(root) / p, dicom_voi)
                for p in tqdm(paths, desc="radjax cv: grouping duplicates", unit="image",
                              file=sys.stderr, leave=False, disable=None)]  # None: on a terminal
  parent = list(range(len(paths)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  def join(i, j):
    parent[find(i)] = find(j)

  first = {}
  for i, (sha, _, patient) in enumerate(identity):
    patient = (patients or {}).get(paths[i]) or patient
    for key in (("sha", sha), ("patient", patient)) if patient else (("sha", sha),):
      if key in first:
        join(i, first[key])
      first.setdefault(key, i)
  for i, j, _ in duplicates.hamming_pairs([h for _, h, _ in identity],
                                     duplicates.NEAR_DUPLICATE_MAX_DISTANCE):
    join(i, j)
  roots = [find(i) for i in range(len(paths))]
  index = {r: k for k, r in enumerate(dict.fromkeys(roots))}
  members = collections.defaultdict(list)
  for p, r in zip(paths, roots):
    members[index[r]].append(p)
  return [index[r] for r in roots], [m for m in members.values() if len(m) > 1]


def stratification_labels(labels: list, num_labels: int) -> list[int]:
  """The class of each image; for multilabel data (label vectors) the image's rarest positive
  label, or `num_labels` when it has none: folds then spread every label's rarest cases."""
  if not labels or not isinstance(labels[0], list):
    return list(labels)
  vectors = np.array(labels)
  positives = (vectors == 1).sum(0)
  order = np.argsort(positives, kind="stable")  # rarest first
  return [next((int(j) for j in order if v[j] == 1), num_labels) for v in vectors]


def assign_folds(labels, groups, folds: int, seed: int) -> list[int]:
  """Fold 1..folds of every image: stratified by label, groups kept whole, shuffled by `seed`."""
  from sklearn.model_selection import StratifiedGroupKFold

  distinct = collections.Counter(groups)
  if len(distinct) < folds:
    raise UserError(f"--folds {folds}: the images form only {len(distinct)} group(s) of "
                    "duplicates or one patient (the largest holds "
                    f"{max(distinct.values())} images); lower --folds, or check the patient ids")
  fold_of = np.zeros(len(labels), int)
  splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
  for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
    fold_of[held_out] = k + 1
  return fold_of.tolist()


def _check_folds(fold_of: list[int], labels: list, folds: int, class_names, where: str):
  """Every fold must hold out, and train on, every class: otherwise it has no AUC. Multilabel:
  every fold must train on both values of every label (its held-out figures use what it has)."""
  if labels and isinstance(labels[0], list):
    for k in range(1, folds + 1):
      rest = np.array([lab for f, lab in zip(fold_of, labels) if f != k])
      for j, name in enumerate(class_names):
        if not {0, 1} <= set(rest[:, j].tolist()):
          raise UserError(f"{where}: fold {k} trains on no {'positive' if 1 not in rest[:, j] else 'negative'} "
                          f"{name} image; every fold needs both values of every label (lower "
                          "--folds, or add images)")
    return
  for k in range(1, folds + 1):
    held = [lab for f, lab in zip(fold_of, labels) if f == k]
    rest = [lab for f, lab in zip(fold_of, labels) if f != k]
    for name, part in (("holds out", held), ("trains on", rest)):
      missing = [class_names[c] for c in range(len(class_names)) if c not in part]
      if missing:
        raise UserError(f"{where}: fold {k} {name} no {', '.join(missing)} image; every fold "
                        "needs every class (lower --folds, or add images)")


def make_plan(data_dir, folds: int, seeds: list[int], dicom_voi: str = "auto",
              manifest=None) -> dict:
  """Which image is held out in which fold, for every seed; and the duplicate groups."""
  if manifest is not None:
    class_names, found, manifest_folds = manifest_images(manifest)
    root, note = pathlib.Path(manifest).parent.resolve(), f"the folds of {manifest}"
    used = sorted(set(manifest_folds.values()))
    if folds and folds != len(used):
      raise UserError(f"--folds {folds}: {manifest} has {len(used)} folds ({used})")
    folds = len(used)
    renumber = {f: k + 1 for k, f in enumerate(used)}
  else:
    if folds < MIN_FOLDS:
      raise UserError(f"--folds {folds}: cross-validation needs at least {MIN_FOLDS} folds")
    source = pathlib.Path(data_dir).resolve()
    class_names, found, note = labelled_images(source, dicom_voi)
    root = source.parent if source.suffix.lower() == ".csv" else source  # paths are relative to it
  from_prepared = manifest is None and prepared.is_prepared(root)  # paths: its source paths
  paths, labels = [p for p, _ in found], [lab for _, lab in found]
  strata = stratification_labels(labels, len(class_names))
  counts = collections.Counter(strata)
  for c, name in enumerate(class_names):
    if not isinstance(labels[0], list) and counts[c] < folds:
      raise UserError(f"{root}: class {name} has {counts[c]} image(s), fewer than --folds {folds}")
  csv_file = manifest if manifest is not None else (
      source if source.suffix.lower() == ".csv" else None)
  groups, joined = groups_of(root, paths, dicom_voi, csv_patients(csv_file) if csv_file else None,
                             prepared_identity(root, paths) if from_prepared else None)
  assignment = {}
  for seed in seeds:
    if manifest is not None:  # the manifest's folds for every seed; seeds vary the training
      fold_of = [renumber[manifest_folds[p]] for p in paths]
      position = {p: i for i, p in enumerate(paths)}
      for g in [g for g in joined if len({fold_of[position[p]] for p in g}) > 1]:
        print(f"radjax cv: warning: {manifest}: duplicates or one patient's images in different "
              f"folds: {', '.join(g)}", file=sys.stderr)
    else:
      fold_of = assign_folds(strata, groups, folds, seed)
    _check_folds(fold_of, labels, folds, class_names, str(manifest or root))
    assignment[str(seed)] = fold_of
  return {"data_dir": str(root if manifest is not None else source), "root": str(root),
          "source": note, "manifest": str(manifest or ""), "prepared": from_prepared,
          "class_names": class_names, "folds": folds, "paths": paths, "labels": labels,
          "groups": joined, "assignment": assignment}
