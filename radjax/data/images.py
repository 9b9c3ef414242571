"""Finding image files, and reading one (PNG, JPEG or DICOM) into a float32 (H, W, 3) array in [0, 255].

Every failure becomes an `ImageReadError` that names the file, so callers can skip or report it.

High bit depth. A 16-bit PNG (PIL modes I;16*, I) is how 12-bit radiographs are often exported; its
values are scaled by their own min..max to [0, 255], exactly as a DICOM file without a window
(`dicom_voi` "none" or "auto" without VOI attributes), so the same radiograph as PNG and as such a
DICOM file gives the same pixels. (Dividing by 65535 would turn 12-bit data nearly black.) The
result keeps its fractional values; `bit_depth` > 8 tells the input pipeline to cache 16 bits.
"""

from __future__ import annotations

import pathlib

import numpy as np

from radjax.errors import UserError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
MAX_8BIT = 255.0
DECODED_RANGE = (0.0, MAX_8BIT)  # what `read_image` returns, as a `pixel_range`


class ImageReadError(UserError):
  """A file that could not be read as an image; the message names it and says why."""


def is_image_file(path) -> bool:
  """Whether radjax should try to read `path`: a known suffix, or a DICOM preamble."""
  from radjax.data import dicom

  path = pathlib.Path(path)
  return path.suffix.lower() in RASTER_SUFFIXES + DICOM_SUFFIXES or dicom.is_dicom(path)


def describe(path) -> dict:
  """Format, size and pixel type of an image without decoding the pixels (for `radjax audit`)."""
  from radjax.data import dicom

  path = pathlib.Path(path)
  if path.suffix.lower() in DICOM_SUFFIXES or dicom.is_dicom(path):
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {"format": "DICOM", "width": int(ds.Columns), "height": int(ds.Rows),
            "mode": str(ds.PhotometricInterpretation), "bits": int(ds.BitsStored)}
  from PIL import Image

  with Image.open(path) as img:
    bits = 16 if img.mode.startswith("I") else 8
    return {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode,
            "bits": bits}


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # PIL's 16/32-bit gray modes
SKIPPED_NAMES = "hidden files and folders (.DS_Store, .git)"


def list_image_files(folder) -> tuple[list[str], list[tuple[str, str]]]:
  """Image files under `folder`, recursively (patient sub-folders), sorted by path; and the other
  files as (path, reason). Hidden files and folders are ignored."""
  files, others = [], []
  folder = pathlib.Path(folder)
  for path in sorted(folder.rglob("*")):
    if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
      continue
    if is_image_file(path):
      files.append(str(path))
    else:
      others.append((str(path), "not an image file (expected .png, .jpg, .jpeg or DICOM)"))
  return files, others


def bit_depth(path) -> int:
  """Bits per stored value (8 for ordinary PNG/JPEG, 16 for 16-bit PNG, Bits Stored for DICOM)."""
  try:
    return describe(path)["bits"]
  except Exception as e:  # header unreadable: read_image reports it properly
    raise ImageReadError(f"{path}: cannot read its header ({type(e).__name__}: {e})") from None


def _min_max_to_8bit(values: np.ndarray) -> np.ndarray:
  lo, hi = float(values.min()), float(values.max())
  if hi == lo:
    return np.zeros(values.shape, np.float32)
  return ((values.astype(np.float64) - lo) * (MAX_8BIT / (hi - lo))).astype(np.float32)


def _read_raster(path: pathlib.Path, data: bytes | None = None) -> np.ndarray:
  import io

  from PIL import Image

  with Image.open(path if data is None else io.BytesIO(data)) as img:
    img.load()
    if img.mode in HIGH_BIT_MODES:
      return _min_max_to_8bit(np.asarray(img))
    # Palette, gray+alpha, RGBA, bilevel, CMYK: as Keras' load_img(color_mode="rgb") does,
    # drop alpha and expand to RGB.
    return np.asarray(img.convert("RGB"), np.float32)


def read_image(path, dicom_voi: str = "auto", data: bytes | None = None,
               info: dict | None = None) -> np.ndarray:
  """Decodes `path` to float32 (H, W, 3) in [0, 255]; gray images are repeated over 3 channels.
  `data`: the file's bytes, decoded from memory (an upload; `path` then only names it).
  `info`: filled with what a DICOM file's decoding applied (`dicom.read_dicom`'s info)."""
  from radjax.data import dicom

  path = pathlib.Path(path)
  try:
    if (len(data) if data is not None else path.stat().st_size) == 0:
      raise ImageReadError(f"{path}: empty file (0 bytes)")
    magic = (data[dicom.PREAMBLE_LENGTH:dicom.PREAMBLE_LENGTH + len(dicom.MAGIC)] == dicom.MAGIC
             if data is not None else dicom.is_dicom(path))
    if path.suffix.lower() in DICOM_SUFFIXES or magic:
      pixels, decoded = dicom.read_dicom(path, voi=dicom_voi, data=data)
      if info is not None:
        info.update(decoded)
      pixels = pixels * MAX_8BIT
    else:
      pixels = _read_raster(path, data)
  except UserError as e:
    raise ImageReadError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
  except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
    raise ImageReadError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.shape[-1] == 1:
    pixels = np.repeat(pixels, 3, axis=-1)
  return np.ascontiguousarray(pixels, np.float32)
def is_gray(pixels: np.ndarray) -> bool:
  return bool(np.array_equal(pixels[..., 0], pixels[..., 1])
              and np.array_equal(pixels[..., 0], pixels[..., 2]))




def pixels_of_array(array, pixel_range=None, name: str = "image") -> np.ndarray:
  """A caller's image array -> float32 (H, W[, C]) grey levels in [0, 255], as `read_image` gives.

  Never guessed: integer arrays are grey levels 0-255 (uint8 and the like); any other range, and
  every float array, is stated as `pixel_range=(low, high)`, the values that mean black and white,
  mapped linearly to 0..255: `(0, 1)` for `np.asarray(img) / 255` or scikit-image's floats,
  `(0, 255)` for decoded grey levels held as floats (`read_image`'s own), `(0, 4095)` for 12-bit
  values. A float array without it, integers outside 0-255, or values outside the stated range
  are a one-line `UserError` naming `name` (a [0, 1] film read as 0-255 is a near-black film that
  the model scores confidently wrong)."""
  values = np.asarray(array)
  if values.dtype == bool or not (np.issubdtype(values.dtype, np.integer)
                                  or np.issubdtype(values.dtype, np.floating)):
    raise UserError(f"{name}: expected a numeric array of grey levels, got dtype {values.dtype}")
  if values.size == 0:
    raise UserError(f"{name}: an empty array (shape {values.shape})")
  finite = np.isfinite(values)
  if not finite.all():
    raise UserError(f"{name}: {int((~finite).sum())} value(s) are NaN or infinite")
  lo, hi = float(values.min()), float(values.max())
  if pixel_range is None:
    if np.issubdtype(values.dtype, np.floating):
      raise UserError(
          f"{name}: a {values.dtype} array needs its range stated: pixel_range=(0, 1) for values "
          "in [0, 1] (np.asarray(img) / 255, scikit-image), (0, 255) for grey levels 0-255 "
          f"(this one spans {lo:g}..{hi:g})")
    if lo < 0 or hi > MAX_8BIT:
      raise UserError(f"{name}: integer grey levels span {lo:g}..{hi:g}, outside 0-255; state "
                      "their range, e.g. pixel_range=(0, 4095) for 12-bit or (0, 65535) for "
                      "16-bit values")
    return values.astype(np.float32)
  try:
    low, high = (float(v) for v in pixel_range)
  except (TypeError, ValueError):
    raise UserError(f"pixel_range={pixel_range!r}: expected (low, high), the values of black "
                    "and white") from None
  if not (np.isfinite(low) and np.isfinite(high) and high > low):
    raise UserError(f"pixel_range={pixel_range!r}: expected finite low < high")
  if lo < low or hi > high:
    raise UserError(f"{name}: values span {lo:g}..{hi:g}, outside the stated "
                    f"pixel_range=({low:g}, {high:g})")
  if (low, high) == (0.0, MAX_8BIT):
    return values.astype(np.float32)
  return ((values.astype(np.float64) - low) * (MAX_8BIT / (high - low))).astype(np.float32)
