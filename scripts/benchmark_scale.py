#!/usr/bin/env python
"""A dataset larger than memory: generate N radiographs at 299x299 from the shared
images (seeded transformed copies, in a temporary folder), `radjax prepare` them, then in a fresh
process stream one full epoch through the training input pipeline (read, augment, batch) with the
decoded set above `cache_mb`, and feed `--steps` train steps from the stream. Also the in-memory
pipeline on the shared dataset, the speed to compare with. Prints JSON lines and a table.

    python scripts/benchmark_scale.py                   # 20,000 images, 50 steps (~10 min, 2 cores)
    python scripts/benchmark_scale.py --images 2000 --steps 5

Peak memory is each measuring process' own peak resident set (`ru_maxrss`): the generation and
preparation run in other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "datasets" / "open_i_abd_vs_cxr"
VAL_FRACTION = 0.02


EMITTED: list[dict] = []


def emit(**record) -> None:
  EMITTED.append(record)
  print(json.dumps(record), flush=True)


def generate(source: pathlib.Path, out: pathlib.Path, count: int, size: int, seed: int) -> None:
  """`count` PNGs in out/TRAIN|VAL/<class>/: each a shared image, rotated, shifted, zoomed and
  maybe flipped by seeded random amounts, at `size`x`size`, gray."""
  import numpy as np
  from PIL import Image, ImageOps

  from radjax.data import listing

  folders = listing.list_folders(source, validate=False)
  pool = [(e.path, folders.class_names[e.label]) for split in folders.splits.values()
          for e in split]
  rng = np.random.default_rng(seed)
  originals = {path: ImageOps.grayscale(Image.open(path)).resize((size, size)) for path, _ in pool}
  for k in range(count):
    path, cls = pool[rng.integers(len(pool))]
    split = "VAL" if rng.random() < VAL_FRACTION else "TRAIN"
    image = originals[path].rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR,
                                   translate=tuple(rng.integers(-20, 21, 2).tolist()))
    zoom = rng.uniform(1.0, 1.2)
    crop = int(size / zoom)
    left, top = rng.integers(0, size - crop + 1, 2)
    image = image.crop((left, top, left + crop, top + crop)).resize((size, size))
    if rng.random() < 0.5:
      image = ImageOps.mirror(image)
    folder = out / split / cls
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / f"{k:06d}.png")


def stream(args) -> None:
  """(child process) One streamed epoch of the prepared set, then `--steps` train steps fed
  from the stream; and the in-memory pipeline over the shared dataset."""
  import itertools

  import jax

  from radjax.data import datasets
  from radjax.training import config as config_lib, run as run_lib

  overrides = ["--config.weights=none", f"--config.data_dir={args.stream}",
               f"--config.cache_mb={args.cache_mb}"]
  config = config_lib.load_config(config_lib.shipped_config("hello_world"), overrides)
  pipeline = datasets.open_pipeline(args.stream, config)
  steps = pipeline.steps_per_epoch(config.batch_size)
  start = time.perf_counter()
  seen = sum(len(b["label"]) for b in pipeline.train_batches(config.batch_size, 1))
  epoch_s = time.perf_counter() - start
  rss_epoch = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  emit(part="stream_epoch", images=seen, steps=steps, seconds=epoch_s,
       images_per_s=seen / epoch_s, streaming=pipeline.streaming,
       shuffle_buffer=pipeline.shuffle_buffer("train"), peak_rss_gib=rss_epoch)

  run = run_lib.build(config, class_names=pipeline.class_names)
  batches = pipeline.train_batches(config.batch_size, 2)
  state, rng = run.state, jax.random.key(0)
  first = next(batches)
  train = run.steps.compile_train(state, run.steps.shard(first), rng)
  start = time.perf_counter()
  for batch in itertools.islice(itertools.chain([first], batches), args.steps):
    state, metrics = train(state, run.steps.shard(batch), rng)
  jax.block_until_ready(metrics)
  steps_s = time.perf_counter() - start
  emit(part="stream_train_steps", steps=args.steps, seconds=steps_s,
       images_per_s=args.steps * config.batch_size / steps_s, loss=float(metrics["loss"]),
       peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)

  # The same data both ways: the shared dataset prepared, kept in memory, and streamed.
  epochs = args.memory_epochs
  for part, cache_mb in (("memory_pipeline", 1 << 20), ("stream_shared", 0)):
    shared = datasets.open_pipeline(args.shared, config_lib.load_config(
        config_lib.shipped_config("hello_world"), ["--config.weights=none",
                                                   f"--config.cache_mb={cache_mb}"]))
    list(shared.train_batches(config.batch_size, 1))  # fills a cache (decoding, not timed)
    start = time.perf_counter()
    seen = sum(len(b["label"]) for b in shared.train_batches(config.batch_size, 2, 1 + epochs))
    emit(part=part, images=seen, epochs=epochs, streaming=shared.streaming,
         images_per_s=seen / (time.perf_counter() - start))


# The table's rows: (part, what it measures).
TABLE_ROWS = (("generate", "generate the films (not radjax: PIL, one process)"),
              ("prepare", "`radjax prepare` (list, decode, resize, write TFDS records)"),
              ("stream_epoch", "one streamed epoch through the input pipeline"),
              ("stream_train_steps", "train steps fed from the stream (batch 5, float32)"),
              ("memory_pipeline", "the shared dataset prepared, kept in memory"),
              ("stream_shared", "the shared dataset prepared, streamed"))


def table(records: list[dict]) -> str:
  by_part = {r["part"]: r for r in records}
  lines = ["| what | images (steps) | s | images/s | peak RSS GiB |", "|---|---|---|---|---|"]
  for part, what in TABLE_ROWS:
    r = by_part.get(part)
    if r is None:
      continue
    count = f"{r['images']:,}" if "images" in r else f"{r['steps'] * 5:,} ({r['steps']} steps)"
    if "epochs" in r:
      count += f" ({r['epochs']} epochs)"
    cells = [f"{r[k]:,.0f}" if r.get(k, 0) >= 100 else f"{r[k]:.1f}" if k in r else ""
             for k in ("seconds", "images_per_s")]
    peak = f"{r['peak_rss_gib']:.2f}" if "peak_rss_gib" in r else ""
    lines.append(f"| {what} | {count} | {' | '.join(cells)} | {peak} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--images", type=int, default=20_000)
  parser.add_argument("--steps", type=int, default=50, help="train steps fed from the stream")
  parser.add_argument("--cache-mb", type=int, default=1024,
                      help="the run's memory budget: the decoded set exceeds it, so it streams")
  parser.add_argument("--memory-epochs", type=int, default=20,
                      help="epochs of the in-memory pipeline over the shared dataset")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--keep", help="generate and prepare into this folder and keep it")
  parser.add_argument("--table", metavar="JSONL", help="print the table of an earlier run")
  parser.add_argument("--stream", help=argparse.SUPPRESS)  # the child process
  parser.add_argument("--shared", help=argparse.SUPPRESS)  # the shared dataset, prepared
  args = parser.parse_args()
  if args.table:
    if not pathlib.Path(args.table).is_file():
      sys.exit(f"benchmark_scale: {args.table}: no such file")
    print(table([json.loads(line) for line in open(args.table) if line.startswith("{")]))
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if args.stream:
    stream(args)
    return
  if not DATASET.is_dir():
    sys.exit(f"benchmark_scale: {DATASET}: the shared dataset is missing")
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(args.keep or tmp)
    start = time.perf_counter()
    generate(DATASET, root / "images", args.images, 299, args.seed)
    emit(part="generate", images=args.images, seconds=time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "radjax", "prepare", "--config", "hello_world",
                    str(root / "images"), str(root / "prepared")], check=True)
    prepare_s = time.perf_counter() - start
    disk = sum(f.stat().st_size for f in (root / "prepared").rglob("*") if f.is_file())
    emit(part="prepare", images=args.images, seconds=prepare_s,
         images_per_s=args.images / prepare_s, disk_mib=disk / 2**20,
         decoded_mib=args.images * 299 * 299 / 2**20)
    subprocess.run([sys.executable, "-m", "radjax", "prepare", "--config", "hello_world",
                    str(DATASET), str(root / "shared")], check=True, capture_output=True)
    child = subprocess.run([sys.executable, __file__, "--stream", str(root / "prepared"),
                            "--shared", str(root / "shared"),
                            "--steps", str(args.steps), "--cache-mb", str(args.cache_mb),
                            "--memory-epochs", str(args.memory_epochs)],
                           check=True, capture_output=True, text=True)
    records = [json.loads(l) for l in child.stdout.splitlines() if l.startswith("{")]
    for r in records:
      print(json.dumps(r))
  by = {r["part"]: r for r in records}
  epoch, memory, shared = by["stream_epoch"], by["memory_pipeline"], by["stream_shared"]
  print(f"\n{table(EMITTED + records)}\n\n"
        f"streamed / in memory, the same (shared) data: "
        f"{shared['images_per_s'] / memory['images_per_s']:.2f}x; the generated set streamed / "
        f"the shared set in memory: {epoch['images_per_s'] / memory['images_per_s']:.2f}x "
        "(the generated films are gray, one channel; the shared set has RGB files, three)")


if __name__ == "__main__":
  main()
