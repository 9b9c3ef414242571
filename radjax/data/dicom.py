"""DICOM files -> float32 images in [0, 1] as displayed (0 = black, 1 = white), with pydicom.

Monochrome images go through the display chain of DICOM PS3.4 N.2 in the standard's order, each
step done by pydicom's own function except the VOI LUT lookup:

1. decode the stored values (pydicom honours Bits Stored and Pixel Representation, so signed data
   stays signed, sign-extended from its high bit);
2. Modality LUT: `apply_modality_lut` (Rescale Slope/Intercept or Modality LUT Sequence);
3. VOI: the first VOI LUT Sequence item or the first Window Center/Width, chosen by `voi` (see
   `VOI_MODES`). A window goes through pydicom's `apply_voi_lut`. A VOI LUT is looked up here
   (`_apply_voi_lut`, PS3.3 C.11.2.1.1) because pydicom 3.0's `apply_voi` keeps the table indices
   in the LUT's output type: with 8-bit entries they are uint8 and wrap at 256, so a 12-bit ->
   8-bit LUT of 4096 entries reads entry i mod 256. radjax reads the LUT Descriptor and LUT Data as
   pydicom does and indexes with int64, clipping to the table;
4. scaling to [0, 1] over the real output range of step 3: the window's output range as pydicom
   produces it, 0..2**(LUT entry bits)-1 for a VOI LUT, the data's min..max without VOI;
5. MONOCHROME1 (low values white) is inverted, 1 - x, after VOI as the standard requires.

Decisions:
- Multi-frame files (Number of Frames > 1): only the first frame is decoded and returned, with a
  warning naming the file and the frame count. radjax classifies 2D images; silently stacking or
  averaging frames would invent an image no radiologist looked at.
- Colour: RGB is returned as (H, W, 3) scaled by 2**BitsStored - 1. YBR_FULL/YBR_FULL_422 are
  converted with `convert_color_space`. Pixels are decoded with `raw=True`, i.e. without pydicom's
  automatic YBR->RGB step, and the decoder reports the photometric interpretation of what it
  returned (JPEG 2000 codecs already return YBR_RCT/YBR_ICT as RGB, YBR_FULL_422 loses its
  subsampling and becomes YBR_FULL), so the conversion happens exactly once. PALETTE COLOR goes
  through `apply_color_lut` and is scaled by the palette's entry bits; an alpha channel is dropped.
  Modality LUT and VOI are monochrome-only in DICOM; ICC profiles are not applied.
- Only DICOM Part 10 files (128-byte preamble + b"DICM") are read; see `is_dicom`.
- Only the top-level Modality/VOI attributes are used: enhanced multi-frame objects that keep them
  in per-frame functional groups are read without them.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.errors import InvalidDicomError

from radjax.errors import UserError

# A Part 10 file starts with a 128-byte preamble followed by the magic b"DICM" (PS3.10 7.1).
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

VOI_MODES = ("auto", "window", "voi_lut", "none")
"""How `read_dicom` picks the VOI (value of interest) transform of a monochrome image:

- "auto": the first VOI LUT Sequence item if present, else the first Window Center/Width if
  present, else none;
- "window": the first Window Center/Width (an error if the file has none);
- "voi_lut": the first VOI LUT Sequence item (an error if the file has none);
- "none": no VOI; the modality values are scaled by their own min..max.
"""

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
YBR = ("YBR_FULL", "YBR_FULL_422")
RGB = "RGB"
PALETTE = "PALETTE COLOR"
RGB_CHANNELS = 3  # a palette may add a fourth, alpha, channel


class DicomError(UserError):
  """A DICOM file that radjax cannot read or display; the message names the file and the reason."""


def is_dicom(path: str | os.PathLike) -> bool:
  """True for a DICOM Part 10 file: a 128-byte preamble then b"DICM". False otherwise, including for
  files that are missing, unreadable or too short."""
  try:
    with open(path, "rb") as f:
      head = f.read(PREAMBLE_LENGTH + len(MAGIC))
  except OSError:
    return False
  return head[PREAMBLE_LENGTH:] == MAGIC


def patient_id(path: str | os.PathLike) -> str:
  """The file's Patient ID (0010,0020), stripped; "" for a file that is not DICOM or has none.
  Reads the header only."""
  path = pathlib.Path(path)
  if not is_dicom(path):
    return ""
  with _reported_as_dicom_error(path, "cannot read the DICOM header"):
    header = pydicom.dcmread(path, stop_before_pixels=True)
  return str(header.get("PatientID", "")).strip()


def read_dicom(path: str | os.PathLike, voi: str = "auto", data: bytes | None = None
               ) -> tuple[np.ndarray, dict]:
  """(image, info) for the DICOM file at `path`.

  image: float32, (H, W) for monochrome or (H, W, 3) for colour, in [0, 1] with 0 black and 1 white
  as displayed. info records what was applied: photometric (the file's), decoded_photometric (what
  the decoder returned), frames, bits_stored, modality_lut (bool), voi ("window" | "voi_lut" |
  "none"), window ((center, width) or None), inverted (bool), color_conversion (e.g.
  "YBR_FULL->RGB", or None).

  `data`: the file's bytes, read from memory (an upload; `path` then only names it).
  Raises DicomError for anything wrong with the file, UserError for an unknown `voi`.
  """
  if voi not in VOI_MODES:
    raise UserError(f"voi must be one of {', '.join(VOI_MODES)}, not {voi!r}")
  path = pathlib.Path(path)
  ds = _read_dataset(path, data)
  with _reported_as_dicom_error(path, "invalid Number of Frames"):
    frames = int(ds.get("NumberOfFrames") or 1)
  if frames > 1:
    warnings.warn(f"{path}: multi-frame DICOM with {frames} frames; using only the first frame",
                  stacklevel=2)
  arr, decoded = _decode_first_frame(path, ds)
  info = {
    "photometric": str(ds.get("PhotometricInterpretation", "")),
    "decoded_photometric": decoded["photometric_interpretation"],
    "frames": frames,
    "bits_stored": int(decoded["bits_stored"]),
    "modality_lut": False,
    "voi": "none",
    "window": None,
    "inverted": False,
    "color_conversion": None,
  }
  if info["decoded_photometric"] in MONOCHROME:
    image = _monochrome(path, ds, arr, voi, info)
  else:
    if voi in ("window", "voi_lut"):
      raise DicomError(f"{path}: voi={voi!r} needs a monochrome image, this one is "
                       f"{info['photometric']}")
    image = _colour(path, ds, arr, info)
  return image, info


# ----------------------------------------------------------------------------------------------
# Reading and decoding
# ----------------------------------------------------------------------------------------------

def _one_line(error: Exception) -> str:
  # pydicom's messages span lines and tabs (one line per plugin); keep the user's message on one.
  return " ".join(str(error).split()).rstrip(".") or type(error).__name__


@contextlib.contextmanager
def _reported_as_dicom_error(path: pathlib.Path, doing: str):
  """Turns any exception into a DicomError naming the file and the step.

  pydicom reports malformed files with many exception types (InvalidDicomError, EOFError,
  ValueError, TypeError, AttributeError, KeyError, RuntimeError, NotImplementedError...), and a
  user-supplied file must end in a message, never a traceback.
  """
  try:
    yield
  except DicomError:
    raise
  except Exception as e:
    raise DicomError(f"{path}: {doing}: {_one_line(e)}") from e


def _read_dataset(path: pathlib.Path, data: bytes | None = None) -> pydicom.Dataset:
  if data is None and not path.exists():
    raise DicomError(f"{path}: no such file")
  if data is None and not path.is_file():
    raise DicomError(f"{path}: not a file")
  magic = data[PREAMBLE_LENGTH:PREAMBLE_LENGTH + len(MAGIC)] == MAGIC if data is not None \
      else is_dicom(path)
  if not magic:
    raise DicomError(f"{path}: not a DICOM file (no {MAGIC!r} after a {PREAMBLE_LENGTH}-byte "
                     "preamble)")
  with _reported_as_dicom_error(path, "cannot read the DICOM data set (truncated or corrupt?)"):
    try:
      ds = pydicom.dcmread(path if data is None else io.BytesIO(data))
    except InvalidDicomError as e:
      raise DicomError(f"{path}: invalid DICOM file: {_one_line(e)}") from e
  if "PixelData" not in ds:
    sop_class = ds.get("SOPClassUID")
    kind = f" (SOP class: {sop_class.name})" if sop_class else ""
    # pydicom stops quietly at the end of a truncated file, so a cut file also lands here.
    raise DicomError(f"{path}: no Pixel Data element: not an image{kind}, or a truncated file")
  if not getattr(ds, "file_meta", {}).get("TransferSyntaxUID"):
    raise DicomError(f"{path}: its file meta information has no Transfer Syntax UID")
  return ds


def _decode_first_frame(path: pathlib.Path, ds: pydicom.Dataset) -> tuple[np.ndarray, dict]:
  """(first frame, pixel properties after decoding), decoded by the same pydicom decoder as
  `ds.pixel_array` but without its automatic colour conversion (see the module docstring)."""
  syntax = ds.file_meta.TransferSyntaxUID
  try:
    decoder = pydicom.pixels.get_decoder(syntax)
  except NotImplementedError as e:
    raise DicomError(f"{path}: pydicom has no decoder for its transfer syntax {syntax.name} "
                     f"({syntax})") from e
  # pydicom knows which plugins decode which syntax, and which of them lack dependencies.
  missing = "; ".join(decoder.missing_dependencies)
  install = (f". Install with pip the requirements of one of these pydicom plugins: {missing}"
             if decoder.is_encapsulated and missing else "")
  if not decoder.is_available:
    raise DicomError(f"{path}: no installed plugin decodes its {syntax.name} pixel data{install}")
  try:
    return decoder.as_array(ds, index=0, raw=True)
  except Exception as e:  # any type, as in _reported_as_dicom_error
    # When an installed plugin failed (e.g. Pillow on 12-bit JPEG), a missing one might not.
    raise DicomError(f"{path}: cannot decode its {syntax.name} pixel data: {_one_line(e)}"
                     f"{install}") from e


# ----------------------------------------------------------------------------------------------
# Monochrome: modality LUT -> VOI -> [0, 1] -> MONOCHROME1 inversion
# ----------------------------------------------------------------------------------------------

def _is_multi(value) -> bool:
  return isinstance(value, Sequence) and not isinstance(value, str)


def _present(ds: pydicom.Dataset, keyword: str) -> bool:
  value = ds.get(keyword)
  return value is not None and value != "" and not (_is_multi(value) and len(value) == 0)


def _has_voi_lut(ds: pydicom.Dataset) -> bool:
  # The same validity test as pydicom's apply_voi_lut: the first item has both LUT attributes.
  seq = ds.get("VOILUTSequence")
  return bool(seq) and all(seq[0].get(k) is not None for k in ("LUTDescriptor", "LUTData"))


def _has_window(ds: pydicom.Dataset) -> bool:
  return _present(ds, "WindowCenter") and _present(ds, "WindowWidth")


def _first(value) -> float:
  # Window Center/Width are multi-valued when the file offers several windows; index 0 is used.
  return float(value[0] if _is_multi(value) else value)


def _voi_choice(path: pathlib.Path, ds: pydicom.Dataset, voi: str) -> str:
  if voi == "auto":
    return "voi_lut" if _has_voi_lut(ds) else "window" if _has_window(ds) else "none"
  if voi == "window" and not _has_window(ds):
    raise DicomError(f"{path}: voi='window' but the file has no Window Center/Width")
  if voi == "voi_lut" and not _has_voi_lut(ds):
    raise DicomError(f"{path}: voi='voi_lut' but the file has no VOI LUT Sequence")
  return voi


def _to_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """values mapped linearly from [lo, hi] to [0, 1]; zeros when the range is empty."""
  if hi == lo:
    return np.zeros(values.shape, np.float32)
  unit = (np.asarray(values, np.float64) - lo) / (hi - lo)
  return np.clip(unit, 0.0, 1.0).astype(np.float32)


def _window_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
  """(value for data below the window, value for data above it) as pydicom's apply_windowing
  produces them. The range depends on Bits Stored, Pixel Representation, the rescale and any
  Modality LUT; asking pydicom for the images of -inf and +inf keeps this exact for every VOI LUT
  Function (LINEAR, LINEAR_EXACT, SIGMOID) instead of re-deriving its rules here."""
  lo, hi = pydicom.pixels.apply_windowing(np.array([-np.inf, np.inf]), ds, index=0)
  return float(lo), float(hi)


LUT_ENTRY_BITS = range(8, 17)  # PS3.3 C.11.2.1.1: 8 to 16 bits per VOI LUT entry
UINT16 = 2**16


def _voi_lut_descriptor(path: pathlib.Path, ds: pydicom.Dataset,
                        item: pydicom.Dataset) -> tuple[int, int, int]:
  """(number of entries, first input value mapped, bits per entry) of a VOI LUT item."""
  descriptor = item.LUTDescriptor
  if not _is_multi(descriptor) or len(descriptor) != 3:
    raise DicomError(f"{path}: its VOI LUT Descriptor is {descriptor!r}, expected 3 values "
                     "(entries, first value mapped, bits per entry)")
  entries, first, bits = (int(v) for v in descriptor)
  # The number of entries is always unsigned, 0 meaning 2**16 (pydicom's reader also undoes a
  # negative count read as SS).
  entries = (entries % UINT16) or UINT16
  # pydicom's rule: LUT Descriptor is "US or SS", SS when Pixel Representation is 1, and its
  # first-mapped value is then signed. A file that wrote it as US for signed data gives e.g.
  # 63488 for -2048: reinterpret it as 16-bit two's complement, as an SS read would.
  if int(ds.get("PixelRepresentation") or 0) == 1 and first >= UINT16 // 2:
    first -= UINT16
  if bits not in LUT_ENTRY_BITS:
    raise DicomError(f"{path}: its VOI LUT Descriptor gives {bits} bits per entry, expected "
                     f"{LUT_ENTRY_BITS.start} to {LUT_ENTRY_BITS.stop - 1}")
  return entries, first, bits


def _voi_lut_data(path: pathlib.Path, ds: pydicom.Dataset, item: pydicom.Dataset,
                  entries: int) -> np.ndarray:
  """The `entries` LUT Data values of a VOI LUT item as int64, read as pydicom's apply_voi does:
  OW bytes are 16-bit words in the transfer syntax's byte order, US/SS a list of numbers (one
  number for a single entry). Entries are unsigned 16-bit words (an SS read is reinterpreted)."""
  data = item["LUTData"].value
  if isinstance(data, (bytes, bytearray, memoryview)):
    if len(data) != 2 * entries:
      raise DicomError(f"{path}: its VOI LUT Data holds {len(data)} bytes ({len(data) / 2:g} "
                       f"16-bit entries) but its LUT Descriptor announces {entries} entries")
    little = ds.file_meta.TransferSyntaxUID.is_little_endian
    if little is None:  # a private transfer syntax pydicom does not know: as the file was read
      little = ds.original_encoding[1]
    if little is None:
      raise DicomError(f"{path}: cannot tell the byte order of its VOI LUT Data")
    table = np.frombuffer(data, "<u2" if little else ">u2")
  else:
    values = list(data) if _is_multi(data) else [data]
    if len(values) != entries:
      raise DicomError(f"{path}: its VOI LUT Data holds {len(values)} entries but its LUT "
                       f"Descriptor announces {entries}")
    table = np.asarray([int(v) for v in values], np.int64) % UINT16
  return table.astype(np.int64)


def _apply_voi_lut(path: pathlib.Path, ds: pydicom.Dataset,
                   values: np.ndarray) -> tuple[np.ndarray, int]:
  """(LUT output, bits per entry) of the first VOI LUT Sequence item applied to integer `values`
  (PS3.3 C.11.2.1.1): value v reads entry v - first mapped, clipped to the table, so values below
  the first mapped one get the first entry and values past the table the last. The indices are
  int64, whatever the entry size (see the module docstring for why not pydicom's apply_voi)."""
  item = ds.VOILUTSequence[0]
  entries, first, bits = _voi_lut_descriptor(path, ds, item)
  table = _voi_lut_data(path, ds, item, entries)
  index = np.clip(values.astype(np.int64) - first, 0, entries - 1)
  return table[index], bits


def _monochrome(path: pathlib.Path, ds: pydicom.Dataset, arr: np.ndarray, voi: str,
                info: dict) -> np.ndarray:
  if arr.ndim != 2:
    raise DicomError(f"{path}: {info['photometric']} pixel data of shape {arr.shape}, expected "
                     "one sample per pixel")
  choice = _voi_choice(path, ds, voi)
  with _reported_as_dicom_error(path, "cannot apply its Modality LUT / rescale"):
    info["modality_lut"] = bool(ds.get("ModalityLUTSequence")) or (
        _present(ds, "RescaleSlope") and _present(ds, "RescaleIntercept"))
    values = pydicom.pixels.apply_modality_lut(arr, ds)
  with _reported_as_dicom_error(path, f"cannot apply its VOI ({choice})"):
    if choice == "voi_lut":
      if not np.issubdtype(values.dtype, np.integer):
        # A VOI LUT is indexed by integers, and rescaled stored values are integers up to float
        # rounding, so round to the nearest (truncating would send 299.9999 to 299).
        values = np.rint(values)
      values, lut_bits = _apply_voi_lut(path, ds, values.astype(np.int64))
      image = _to_unit(values, 0, 2**lut_bits - 1)
    elif choice == "window":
      info["window"] = (_first(ds.WindowCenter), _first(ds.WindowWidth))
      values = pydicom.pixels.apply_voi_lut(values, ds, index=0, prefer_lut=False)
      image = _to_unit(values, *_window_output_range(ds))
    else:
      image = _to_unit(values, float(values.min()), float(values.max()))
  info["voi"] = choice
  if info["decoded_photometric"] == "MONOCHROME1":
    image = 1.0 - image
    info["inverted"] = True
  return image


# ----------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------

def _colour(path: pathlib.Path, ds: pydicom.Dataset, arr: np.ndarray, info: dict) -> np.ndarray:
  photometric = info["decoded_photometric"]
  if photometric not in (RGB, PALETTE) + YBR:
    raise DicomError(f"{path}: unsupported Photometric Interpretation {photometric!r}; radjax "
                     f"reads {', '.join(MONOCHROME + (RGB, PALETTE) + YBR)}")
  if int(ds.get("PixelRepresentation", 0)) != 0:
    raise DicomError(f"{path}: signed {photometric} pixel data is not supported")
  if photometric != RGB:
    info["color_conversion"] = f"{photometric}->{RGB}"
  elif info["photometric"] != RGB:  # the decoder converted (JPEG 2000's YBR_RCT/YBR_ICT)
    info["color_conversion"] = f"{info['photometric']}->{RGB} (decoder)"

  with _reported_as_dicom_error(path, f"cannot convert {photometric} to {RGB}"):
    if photometric == PALETTE:
      rgb = pydicom.pixels.apply_color_lut(arr, ds)[..., :RGB_CHANNELS]
      bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    elif photometric in YBR:
      rgb = pydicom.pixels.convert_color_space(arr, photometric, RGB)  # 8-bit data only
      bits = info["bits_stored"]
    else:
      rgb, bits = arr, info["bits_stored"]
  if rgb.ndim != 3 or rgb.shape[-1] != RGB_CHANNELS:
    raise DicomError(f"{path}: {info['photometric']} pixel data of shape {arr.shape}, expected "
                     f"(rows, columns, {RGB_CHANNELS})")
  return _to_unit(rgb, 0, 2**bits - 1)
