"""radjax.data.dicom: the monochrome display chain, colour, multi-frame, and every way a file can be bad.

Most files are written here with pydicom from the project's chest PNGs; pydicom's bundled test
files are used only when present locally (get_testdata_file(..., download=False)), never
downloaded.
"""

import re
import warnings

import numpy as np
import pydicom
import pydicom.data
import pydicom.pixels
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (MPEG2MPML, ExplicitVRLittleEndian, SecondaryCaptureImageStorage,
                          generate_uid)

from conftest import write_dicom
from radjax.data.dicom import DicomError, is_dicom, read_dicom, VOI_MODES
from radjax.errors import UserError

# Twins (a) and (b): stored = gray * GAIN + OFFSET in 12 of 16 bits, displayed through a rescale.
GAIN, OFFSET = 4, 100
BITS_STORED = 12
MAX_STORED = 2**BITS_STORED - 1
SLOPE, INTERCEPT = 0.5, -50.0  # modality values m = 0.5 * (4g + 100) - 50 = 2g, i.e. 0..510
# DICOM's LINEAR window maps x to ((x - (c - 0.5)) / (w - 1) + 0.5); with w - 1 = 510 and
# c - 0.5 = 255 that is m / 510 = g / 255, and m = 0 sits exactly on the lower edge.
CENTER, WIDTH = 255.5, 511.0
EXACT = 1e-6  # float32 rounding of values computed in float64


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def bundled(name):
  """Path of one of pydicom's test files, only if it ships with the installed package."""
  path = pydicom.data.get_testdata_file(name, download=False)
  if path is None:
    pytest.skip(f"pydicom test file {name} is not installed locally")
  return path


def named(path):
  return re.escape(str(path))


@pytest.fixture(scope="module")
def png(dataset_dir):
  return sorted((dataset_dir / "TRAIN" / "chest").glob("*.png"))[0]


@pytest.fixture(scope="module")
def gray(png):
  g = np.asarray(Image.open(png).convert("L"))
  assert g.min() < g.max()  # a real image, so "identical" below means something
  return g


@pytest.fixture
def twins(tmp_path, gray):
  """(MONOCHROME2 file, its display-equivalent MONOCHROME1 twin)."""
  stored = gray.astype(np.uint16) * GAIN + OFFSET
  mono2 = write_dicom(tmp_path / "mono2.dcm", stored, bits_stored=BITS_STORED,
                      RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT,
                      WindowCenter=CENTER, WindowWidth=WIDTH)
  # Twin: stored' = 4095 - stored, so m' = SLOPE * (4095 - s) + b = K - m with
  # K = SLOPE * 4095 + 2b. Its window must map K - m to 1 - (m - (c - 0.5)) / (w - 1) - 0.5;
  # solving (K - m - (c' - 0.5)) / (w - 1) + 0.5 for c' gives c' = K - c + 1, same width.
  k = SLOPE * MAX_STORED + 2 * INTERCEPT
  mono1 = write_dicom(tmp_path / "mono1.dcm", MAX_STORED - stored, "MONOCHROME1",
                      bits_stored=BITS_STORED, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT,
                      WindowCenter=k - CENTER + 1, WindowWidth=WIDTH)
  return mono2, mono1


# ----------------------------------------------------------------------------------------------
# Monochrome display chain
# ----------------------------------------------------------------------------------------------

def test_rescale_then_window_gives_back_the_png(twins, gray):
  image, info = read_dicom(twins[0])
  assert image.dtype == np.float32 and image.shape == gray.shape
  np.testing.assert_allclose(image, gray / 255.0, atol=EXACT)
  assert info["photometric"] == "MONOCHROME2" and info["bits_stored"] == BITS_STORED
  assert info["modality_lut"] is True and info["voi"] == "window"
  assert info["window"] == (CENTER, WIDTH) and info["inverted"] is False and info["frames"] == 1


def test_monochrome1_twin_displays_identically(twins, gray):
  image2, _ = read_dicom(twins[0])
  image1, info1 = read_dicom(twins[1])
  assert info1["photometric"] == "MONOCHROME1" and info1["inverted"] is True
  assert info1["voi"] == "window" and info1["window"] == (1947.5 - CENTER + 1, WIDTH)
  np.testing.assert_allclose(image1, image2, atol=EXACT)
  # Without VOI, min..max scaling then inversion is display-equivalent too.
  np.testing.assert_allclose(read_dicom(twins[1], voi="none")[0],
                             read_dicom(twins[0], voi="none")[0], atol=EXACT)


def test_signed_12_bit_ct_through_rescale_and_window(tmp_path):
  # 12-bit two's complement in 16-bit words with the unused high bits zero: only honouring
  # Bits Stored and Pixel Representation gives -2000 back from 0x0830.
  stored = np.array([[-2000, -1000, 1000, 1064, 1100, 2000]])
  path = write_dicom(tmp_path / "ct.dcm", (stored & MAX_STORED).astype(np.uint16),
                     bits_stored=BITS_STORED, signed=True, RescaleSlope=1,
                     RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
  # HU = stored - 1024 = [-3024, -2024, -24, 40, 76, 976]. LINEAR window 40/400: HU <= -160 is
  # black, HU > 239 white, else (HU - 39.5) / 399 + 0.5: -24 -> 0.340852, 40 -> 0.501253,
  # 76 -> 0.591479.
  image, info = read_dicom(path)
  np.testing.assert_allclose(image[0], [0, 0, 0.340852, 0.501253, 0.591479, 1], atol=EXACT)
  assert info["voi"] == "window" and info["window"] == (40.0, 400.0)
  # Without VOI: (HU + 3024) / 4000.
  image, info = read_dicom(path, voi="none")
  np.testing.assert_allclose(image[0], [0, 0.25, 0.75, 0.766, 0.775, 1], atol=EXACT)
  assert info["voi"] == "none" and info["window"] is None and info["modality_lut"] is True


@pytest.fixture
def voi_lut_file(tmp_path):
  """Modality values m = [50, 100, 300, 355, 600] (stored 2m + 100, slope 0.5, intercept -50), a
  16-bit VOI LUT of 256 entries starting at 100 with entry i = 200 i, and a window as well."""
  stored = np.array([[200, 300, 700, 810, 1300]], np.uint16)
  item = Dataset()
  item.add_new(0x00283002, "US", [256, 100, 16])  # LUT Descriptor: entries, first mapped, bits
  item.add_new(0x00283006, "US", [200 * i for i in range(256)])  # LUT Data
  return write_dicom(tmp_path / "voi_lut.dcm", stored, bits_stored=BITS_STORED,
                     RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT, VOILUTSequence=[item],
                     WindowCenter=CENTER, WindowWidth=WIDTH)


def test_voi_lut_sequence_is_preferred_and_scaled_by_its_entry_bits(voi_lut_file):
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # e.g. pydicom's "VOI LUT on a float input array"
    image, info = read_dicom(voi_lut_file)
  # m < 100 -> entry 0; 300 -> entry 200 = 40000; 355 -> entry 255 = 51000; 600 -> clamped to
  # the last entry; divided by 2**16 - 1.
  np.testing.assert_allclose(image[0], [0, 0, 40000 / 65535, 51000 / 65535, 51000 / 65535],
                             atol=EXACT)
  assert info["voi"] == "voi_lut" and info["window"] is None
  assert read_dicom(voi_lut_file, voi="voi_lut")[1]["voi"] == "voi_lut"


def test_window_can_be_forced_over_a_voi_lut(voi_lut_file):
  image, info = read_dicom(voi_lut_file, voi="window")
  assert info["voi"] == "window" and info["window"] == (CENTER, WIDTH)
  np.testing.assert_allclose(image[0], [50 / 510, 100 / 510, 300 / 510, 355 / 510, 1], atol=EXACT)


def voi_lut_item(descriptor, lut, vr="US"):
  """A VOI LUT Sequence item: LUT Descriptor (entries, first mapped, bits) written as US, and LUT
  Data `lut` written as US values or, for vr="OW", as little-endian 16-bit words."""
  item = Dataset()
  item.add_new(0x00283002, "US", list(descriptor))
  lut = [int(v) for v in lut]
  data = np.asarray(lut, "<u2").tobytes() if vr == "OW" else lut
  item.add_new(0x00283006, vr, data)
  return item


def sqrt_lut(entries=MAX_STORED + 1):
  """An 8-bit LUT over 0..entries-1 that no 256-entry table or wrapped index can imitate."""
  x = np.arange(entries)
  return np.rint(255 * np.sqrt(x / (entries - 1))).astype(np.int64)


@pytest.mark.parametrize("vr", ["US", "OW"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_8_bit_voi_lut_of_4096_entries_is_looked_up_without_wrapping(tmp_path, vr, photometric):
  # A 12-bit -> 8-bit LUT: pydicom's apply_voi_lut keeps the indices in uint8, so index 256 would
  # read entry 0 again. Every stored value 0..4095 appears once in the 64x64 image.
  stored = np.random.default_rng(0).permutation(MAX_STORED + 1).reshape(64, 64).astype(np.uint16)
  lut = sqrt_lut()
  path = write_dicom(tmp_path / "voi_lut_8_bit.dcm", stored, photometric, bits_stored=BITS_STORED,
                     VOILUTSequence=[voi_lut_item((MAX_STORED + 1, 0, 8), lut, vr)])
  image, info = read_dicom(path)
  expected = lut[stored] / 255.0
  if photometric == "MONOCHROME1":
    expected = 1.0 - expected
  assert image.dtype == np.float32 and image.shape == (64, 64)
  np.testing.assert_allclose(image, expected, atol=EXACT)
  assert info["voi"] == "voi_lut" and info["window"] is None and info["modality_lut"] is False
  assert info["inverted"] is (photometric == "MONOCHROME1")


def test_voi_lut_descriptor_count_0_means_65536_entries(tmp_path):
  # 16-bit input over the whole 0..65535 range through a 65536-entry 16-bit LUT (too long for a US
  # element, so OW), whose descriptor says 0 entries.
  stored = np.arange(0, 2**16, 16, dtype=np.uint16).reshape(64, 64)
  stored[-1, -1] = 2**16 - 1
  x = np.arange(2**16)
  lut = np.rint(65535 * (x / 65535) ** 2).astype(np.int64)
  path = write_dicom(tmp_path / "voi_lut_65536.dcm", stored,
                     VOILUTSequence=[voi_lut_item((0, 0, 16), lut, "OW")])
  image, info = read_dicom(path)
  np.testing.assert_allclose(image, lut[stored] / 65535.0, atol=EXACT)
  assert image[-1, -1] == 1 and info["voi"] == "voi_lut"


def test_voi_lut_clips_values_outside_the_table_to_its_first_and_last_entries(tmp_path):
  # 100 entries for the values 1000..1099, entry i = 20 + 2i: below 1000 -> entry 0 (20), above
  # 1099 -> entry 99 (218).
  stored = np.array([[0, 999, 1000, 1050, 1099, 1100, MAX_STORED]], np.uint16)
  lut = 20 + 2 * np.arange(100)
  path = write_dicom(tmp_path / "voi_lut_clipped.dcm", stored, bits_stored=BITS_STORED,
                     VOILUTSequence=[voi_lut_item((100, 1000, 8), lut)])
  image, _ = read_dicom(path)
  np.testing.assert_allclose(image[0], np.array([20, 20, 20, 120, 218, 218, 218]) / 255, atol=EXACT)


def test_signed_data_read_a_first_mapped_value_stored_as_us_as_negative(tmp_path):
  # Signed 12-bit values -2048..2047 and a 4096-entry LUT starting at -2048, its descriptor written
  # as US: 63488 is -2048 in 16-bit two's complement, the SS reading pydicom gives LUT Descriptor
  # when Pixel Representation is 1.
  values = np.random.default_rng(1).permutation(np.arange(-2048, 2048)).reshape(64, 64)
  lut = sqrt_lut()
  path = write_dicom(tmp_path / "voi_lut_signed.dcm", (values & MAX_STORED).astype(np.uint16),
                     bits_stored=BITS_STORED, signed=True,
                     VOILUTSequence=[voi_lut_item((MAX_STORED + 1, 2**16 - 2048, 8), lut)])
  image, _ = read_dicom(path)
  np.testing.assert_allclose(image, lut[values + 2048] / 255.0, atol=EXACT)


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_data_length_not_matching_its_descriptor_is_refused_by_name(tmp_path, vr):
  path = write_dicom(tmp_path / "voi_lut_short.dcm", np.zeros((2, 2), np.uint16),
                     bits_stored=BITS_STORED,
                     VOILUTSequence=[voi_lut_item((MAX_STORED + 1, 0, 8), sqrt_lut()[:-1], vr)])
  with pytest.raises(DicomError, match=f"^{named(path)}: .*LUT Data.*4095.*4096") as caught:
    read_dicom(path)
  assert "\n" not in str(caught.value)


def test_bundled_mr_window_matches_the_hand_computed_formula():
  ds = pydicom.dcmread(bundled("MR_small.dcm"))
  image, info = read_dicom(bundled("MR_small.dcm"))
  center, width = float(ds.WindowCenter), float(ds.WindowWidth)
  assert info["voi"] == "window" and info["window"] == (center, width)
  x = ds.pixel_array.astype(np.float64)  # no rescale in this file
  expected = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
  np.testing.assert_allclose(image, expected, atol=EXACT)
  assert 0 < image.min() < image.max() == 1  # part of the data lies above the window


def test_bundled_signed_ct_without_window_is_min_max_scaled():
  ds = pydicom.dcmread(bundled("CT_small.dcm"))
  image, info = read_dicom(bundled("CT_small.dcm"))
  assert info["modality_lut"] is True and info["voi"] == "none" and info["bits_stored"] == 16
  hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
  np.testing.assert_allclose(image, (hu - hu.min()) / (hu.max() - hu.min()), atol=EXACT)


def test_voi_none_is_min_max_and_a_constant_image_gives_zeros(tmp_path, twins, gray):
  image, info = read_dicom(twins[0], voi="none")
  np.testing.assert_allclose(image, (gray - gray.min()) / (gray.max() - gray.min()), atol=EXACT)
  assert info["voi"] == "none"
  flat = write_dicom(tmp_path / "flat.dcm", np.full((4, 5), 700, np.uint16),
                     RescaleSlope=2, RescaleIntercept=-3)
  image, info = read_dicom(flat)
  assert image.shape == (4, 5) and not image.any() and info["voi"] == "none"


def test_forced_voi_modes_need_their_attributes(tmp_path, twins):
  plain = write_dicom(tmp_path / "plain.dcm", np.arange(12, dtype=np.uint16).reshape(3, 4))
  with pytest.raises(DicomError, match=f"{named(plain)}.*Window Center"):
    read_dicom(plain, voi="window")
  with pytest.raises(DicomError, match=f"{named(twins[0])}.*VOI LUT Sequence"):
    read_dicom(twins[0], voi="voi_lut")
  with pytest.raises(UserError, match="voi must be one of"):
    read_dicom(twins[0], voi="sigmoid")
  assert set(VOI_MODES) == {"auto", "window", "voi_lut", "none"}


def test_multi_frame_returns_the_first_frame_and_warns(tmp_path, gray):
  frames = np.stack([gray, 255 - gray, gray // 2])
  path = write_dicom(tmp_path / "cine.dcm", frames, frames=len(frames))
  with pytest.warns(UserWarning, match=f"{named(path)}.*3 frames"):
    image, info = read_dicom(path)
  np.testing.assert_allclose(image, (gray - gray.min()) / (gray.max() - gray.min()), atol=EXACT)
  assert info["frames"] == 3


# ----------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------

def test_rgb_file_from_the_png_is_the_png(tmp_path, png):
  rgb = np.asarray(Image.open(png).convert("RGB"))
  path = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")
  image, info = read_dicom(path)
  assert image.shape == rgb.shape and image.dtype == np.float32
  np.testing.assert_allclose(image, rgb / 255.0, atol=EXACT)
  assert info["photometric"] == "RGB" and info["color_conversion"] is None


def test_ybr_full_is_converted_to_rgb_once(tmp_path, png):
  rgb = np.asarray(Image.open(png).convert("RGB"))
  ybr = pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL")
  assert np.abs(ybr.astype(int) - rgb).max() > 20  # so a missing or double conversion shows
  path = write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL")
  image, info = read_dicom(path)
  # YBR_FULL holds 8-bit rounded values, so the round trip is exact to a couple of levels.
  np.testing.assert_allclose(image, rgb / 255.0, atol=2 / 255)
  assert info["color_conversion"] == "YBR_FULL->RGB"


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "examples_jpeg2k.dcm"])
def test_bundled_ybr_files_match_pydicoms_rgb(name):
  # JPEG baseline YBR_FULL, uncompressed YBR_FULL_422 and JPEG 2000 YBR_RCT (which the decoder
  # returns as RGB): each must come out as pydicom's own default RGB conversion.
  image, info = read_dicom(bundled(name))
  expected = pydicom.dcmread(bundled(name)).pixel_array / 255.0
  assert info["photometric"].startswith("YBR") and "->RGB" in info["color_conversion"]
  np.testing.assert_allclose(image, expected, atol=EXACT)


def test_bundled_palette_colour_goes_through_the_lut():
  ds = pydicom.dcmread(bundled("examples_palette.dcm"))
  image, info = read_dicom(bundled("examples_palette.dcm"))
  assert image.shape == (ds.Rows, ds.Columns, 3)
  assert info["color_conversion"] == "PALETTE COLOR->RGB"
  entries, first, bits = ds.RedPaletteColorLookupTableDescriptor
  assert (entries, first, bits) == (256, 0, 16)  # so indices map directly onto 16-bit entries
  index = ds.pixel_array
  for channel, colour in enumerate(("Red", "Green", "Blue")):
    lut = np.frombuffer(ds[f"{colour}PaletteColorLookupTableData"].value, "<u2")
    np.testing.assert_allclose(image[..., channel], lut[index] / 65535.0, atol=EXACT)
  assert image.std() > 0.05  # not a flat image


def test_unsupported_colour_is_refused(tmp_path):
  pixels = np.zeros((2, 2, 3), np.uint8)
  hsv = write_dicom(tmp_path / "hsv.dcm", pixels, "HSV")
  with pytest.raises(DicomError, match=f"{named(hsv)}.*'HSV'"):
    read_dicom(hsv)
  signed = write_dicom(tmp_path / "signed_rgb.dcm", pixels, "RGB", signed=True)
  with pytest.raises(DicomError, match=f"{named(signed)}.*signed RGB"):
    read_dicom(signed)
  rgb = write_dicom(tmp_path / "rgb.dcm", pixels, "RGB")
  with pytest.raises(DicomError, match=f"{named(rgb)}.*monochrome"):
    read_dicom(rgb, voi="window")


# ----------------------------------------------------------------------------------------------
# Compressed data without a decoder
# ----------------------------------------------------------------------------------------------

def _decoder_for(path):
  return pydicom.pixels.get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)


def test_jpeg_ls_without_a_plugin_names_the_plugins_to_install():
  path = bundled("MR_small_jpeg_ls_lossless.dcm")
  if _decoder_for(path).is_available:
    pytest.skip("a JPEG-LS decoding plugin is installed")
  with pytest.raises(DicomError, match=rf"{named(path)}.*JPEG-LS Lossless Image Compression"
                                       r".*pip.*pylibjpeg-libjpeg") as caught:
    read_dicom(path)
  assert "pyjpegls" in str(caught.value)


def test_12_bit_jpeg_that_pillow_cannot_decode_names_the_plugins_to_install():
  path = bundled("JPGExtended.dcm")
  if set(_decoder_for(path).available_plugins) - {"pillow"}:
    pytest.skip("a 12-bit JPEG decoding plugin is installed")
  with pytest.raises(DicomError, match=rf"{named(path)}.*JPEG Extended.*12-bit"
                                       r".*pylibjpeg-libjpeg"):
    read_dicom(path)


def test_a_syntax_pydicom_cannot_decode_at_all_is_named(tmp_path):
  path = write_dicom(tmp_path / "video.dcm", np.zeros((2, 2), np.uint8))
  ds = pydicom.dcmread(path)
  ds.file_meta.TransferSyntaxUID = MPEG2MPML
  ds.PixelData = encapsulate([bytes(4)])
  ds["PixelData"].VR = "OB"
  ds.save_as(path, enforce_file_format=True)
  with pytest.raises(DicomError, match=f"{named(path)}: .*no decoder.*MPEG2 Main Profile"):
    read_dicom(path)


# ----------------------------------------------------------------------------------------------
# is_dicom and bad files
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def not_dicom(tmp_path, png):
  empty = tmp_path / "empty.dcm"
  empty.write_bytes(b"")
  text = tmp_path / "notes.txt"
  text.write_text("DICM " * 100)  # the magic, but not at byte 128
  return {"png": png, "empty": empty, "text": text, "missing": tmp_path / "missing.dcm",
          "directory": tmp_path}


def test_is_dicom(twins, not_dicom):
  assert is_dicom(twins[0]) and is_dicom(bundled("CT_small.dcm"))
  for path in not_dicom.values():
    assert not is_dicom(path), path


def test_files_that_are_not_dicom_are_refused_by_name(not_dicom):
  reasons = {"png": "not a DICOM file", "empty": "not a DICOM file", "text": "not a DICOM file",
             "missing": "no such file", "directory": "not a file"}
  for kind, path in not_dicom.items():
    with pytest.raises(DicomError, match=f"{named(path)}: {reasons[kind]}"):
      read_dicom(path)


@pytest.mark.parametrize("keep", [140, 400, -1000])  # in the file meta, the data set, the pixels
def test_truncated_files_are_refused_by_name(tmp_path, twins, keep):
  data = twins[0].read_bytes()
  path = tmp_path / "truncated.dcm"
  path.write_bytes(data[:keep])
  reason = "no Pixel Data.*truncated" if keep > 0 else "cannot decode.*less than expected"
  with pytest.raises(DicomError, match=f"{named(path)}: {reason}"):
    read_dicom(path)


def test_a_file_without_pixel_data_is_refused_by_name(tmp_path):
  path = write_dicom(tmp_path / "image.dcm", np.zeros((2, 2), np.uint8))
  ds = pydicom.dcmread(path)
  del ds.PixelData
  ds.save_as(path, enforce_file_format=True)
  assert is_dicom(path)
  with pytest.raises(DicomError, match=f"{named(path)}: no Pixel Data"):
    read_dicom(path)
