"""The tutorial's own dataset as a tensorflow-datasets builder: `open_i_abd_vs_cxr`.

    import tensorflow_datasets as tfds
    from radjax.data.tfds_open_i import OpenIAbdVsCxr      # registers "open_i_abd_vs_cxr"
    builder = OpenIAbdVsCxr(data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="../shared/datasets/open_i_abd_vs_cxr"))   # offline, from an extracted copy
    train = builder.as_dataset(split="train")                  # 65 films; "validation": 10

With a manual_dir holding TRAIN/ and VAL/ (the extracted archive, or the shared copy), nothing is
downloaded. Without one, the builder downloads the tutorial's archive (`listing.PUBLIC_DATASET_URL`).
TFDS checks a download against the checksum registered for its URL (`checksums.tsv` beside this
module), and none is: the publisher gives none, and this project has had no network to record
one. So the archive is used unverified (tested against a local server). Running
`download_and_prepare` once with `DownloadConfig(register_checksums=True)` on a machine with
network access writes `checksums.tsv`; committed, it makes every later download checked.

Examples are the original PNGs (3 channels, their own sizes) with the label (abd = 0, chest = 1,
the sorted folder names) and the path relative to the split folder; `radjax prepare` is the way to
a resized, training-ready dataset.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from radjax.data import listing

CLASS_NAMES = ("abd", "chest")
SPLITS = {"train": "TRAIN", "validation": "VAL"}


class OpenIAbdVsCxr(tfds.core.GeneratorBasedBuilder):
  """Open-I abdomen vs chest radiographs (Lakhani et al., J Digit Imaging 2018): 65 + 10 PNGs."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The tutorial's TRAIN/ and VAL/ folders."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Set manual_dir to a folder with the tutorial's TRAIN/ and VAL/ class folders (the "
      "extracted Open_I_abd_vs_CXRs.zip, or ../shared/datasets/open_i_abd_vs_cxr).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "path": tfds.features.Text()}),
        supervised_keys=("image", "label"),
        homepage="https://github.com/paras42/Hello_World_Deep_Learning",
        citation="Lakhani P, Gray DL, Pett CR, Nagy P, Shih G. Hello World Deep Learning in "
                 "Medical Imaging. J Digit Imaging. 2018;31(3):283-289.")

  def _split_generators(self, dl_manager):
    root = _dataset_root(dl_manager)
    return {split: self._generate_examples(root / folder) for split, folder in SPLITS.items()}

  def _generate_examples(self, split_dir: pathlib.Path):
    for label, name in enumerate(CLASS_NAMES):
      for path in sorted((split_dir / name).glob("*.png")):
        relative = path.relative_to(split_dir).as_posix()
        yield relative, {"image": str(path), "label": label, "path": relative}


def _dataset_root(dl_manager) -> pathlib.Path:
  """The folder holding TRAIN/ and VAL/: the manual_dir when it has them, else the download."""
  manual = getattr(dl_manager, "_manual_dir", None)
  if manual is not None and pathlib.Path(manual).is_dir():
    found = _find_splits(pathlib.Path(manual))
    if found is not None:
      return found
  extracted = pathlib.Path(dl_manager.download_and_extract(listing.PUBLIC_DATASET_URL))
  found = _find_splits(extracted)
  if found is None:
    raise FileNotFoundError(f"{extracted}: no TRAIN/ and VAL/ folders in the archive")
  return found


def _find_splits(root: pathlib.Path) -> pathlib.Path | None:
  for candidate in (root, *sorted(p for p in root.rglob("*") if p.is_dir())):
    if (candidate / "TRAIN").is_dir() and (candidate / "VAL").is_dir():
      return candidate
  return None
