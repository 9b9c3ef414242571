"""Which data source a `data_dir` names, and its input pipeline:

    DIR            class folders, TRAIN/ and VAL/ (optional TEST/)  -> listing.list_folders + tf.data
    FILE.csv       a manifest: path,label[,patient_id][,split]      -> listing.list_manifest + tf.data
    FILE.npz       pre-decoded arrays (`radjax export-arrays`)      -> arrays.ArrayPipeline (no TF)
    DIR/radjax.json  a prepared TFDS dataset (`radjax prepare`)     -> prepared.PreparedPipeline

Every pipeline serves the same batches: `train_batches`, `eval_batches`, `recalibration_batches`,
with `class_names`, `counts()`, `examples` and `class_weights`.
"""

from __future__ import annotations

import pathlib

from radjax.data import arrays, files, listing, prepared


def list_dataset(data_dir, splits=("train", "val"), validate: bool = True,
                 dicom_voi: str = "auto") -> listing.Folders:
  """A CSV manifest or class folders, listed (`listing.list_manifest` / `listing.list_folders`)."""
  lister = listing.list_manifest if pathlib.Path(data_dir).suffix.lower() == ".csv" \
      else listing.list_folders
  return lister(data_dir, splits=splits, validate=validate, dicom_voi=dicom_voi)


def open_pipeline(data_dir, config, splits=("train", "val")):
  """The input pipeline of the data source `data_dir` names (see the module docstring)."""
  if arrays.is_arrays(data_dir):
    return arrays.ArrayPipeline(arrays.load(data_dir), config, splits)
  if prepared.is_prepared(data_dir):
    return prepared.PreparedPipeline(data_dir, config, splits)
  return files.Pipeline(list_dataset(data_dir, splits=splits, dicom_voi=config.dicom_voi), config)


def list_every_split(data_dir, dicom_voi: str = "auto") -> listing.Folders:
  """Every split a dataset has: the split folders present, or a manifest's train, val and test
  rows (all rows as "train" without a split column). For `radjax export-arrays`."""
  path = pathlib.Path(data_dir)
  if path.suffix.lower() == ".csv":
    splits = arrays.SPLITS if "split" in listing.read_manifest(path)[0] else ("train",)
    return listing.list_manifest(path, splits=splits, dicom_voi=dicom_voi)
  present = listing.find_splits(path)
  return listing.list_folders(path, splits=tuple(s for s in arrays.SPLITS if s in present),
                           dicom_voi=dicom_voi)
