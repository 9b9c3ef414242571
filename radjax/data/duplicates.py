"""Exact and near-duplicate images by perceptual hash: the audit reports them, cross-validation
keeps them in one fold, and a prepared dataset stores each image's hash."""

from __future__ import annotations

import numpy as np

# Perceptual-hash (64-bit pHash) Hamming distance at or below which two images are near duplicates.
# On the shared Open-I set, JPEG re-encoding, halving the size, brightness +2 and contrast x1.2 move
# the hash by at most 6 bits, while the closest pair of distinct radiographs (different patients'
# PA chest films) is 10 bits apart. Chest films all look alike at 8x8 DCT resolution, so a larger
# threshold would start flagging different patients.
NEAR_DUPLICATE_MAX_DISTANCE = 6


HASH_ROWS_PER_CHUNK = 256  # pairwise distances are computed this many rows at a time (memory)


def to_gray_pil(pixels: np.ndarray):
  from PIL import Image

  return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).convert("L")


def phash_of_gray(gray) -> int:
  import imagehash

  return int(str(imagehash.phash(gray)), 16)


def perceptual_hash(pixels: np.ndarray) -> int:
  """64-bit pHash of a decoded [0, 255] image (as `images.read_image` returns it), in grayscale."""
  return phash_of_gray(to_gray_pil(pixels))


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


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


