"""How big an export is, how long it takes to load, and how fast the reading page answers.

  python scripts/export_timing.py --workdir runs/hello \
      --film ../shared/datasets/open_i_abd_vs_cxr/VAL/chest/chst_val0.png \
      --out scripts/results/cpu-DATE-export.jsonl

Exports the run's best checkpoint into a temporary folder, then measures, each in a fresh process
as a user meets them: importing radjax.exported and loading the export; its first prediction
(compiling); later predictions of one film; and the page's answer to one uploaded film (`radjax
serve`'s application, through Starlette's test client: decoding, preprocessing, the forward pass,
Grad-CAM and the PNGs sent back), from a run and from the export. Prints a JSON line and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

LOAD = """
import json, sys, time
start = time.perf_counter()
import radjax.exported
from radjax.data import images
model = radjax.exported.load(sys.argv[1])
loaded = time.perf_counter() - start
film = images.read_image(sys.argv[2])
decoded = images.DECODED_RANGE  # read_image's float grey levels
start = time.perf_counter(); model.predict([film], pixel_range=decoded); first = time.perf_counter() - start
warm = []
for _ in range(5):
  start = time.perf_counter(); model.predict([film], pixel_range=decoded); warm.append(time.perf_counter() - start)
print(json.dumps({"load_s": loaded, "first_predict_s": first, "warm_predict_s": sorted(warm)[2]}))
"""

PAGE = """
import json, pathlib, sys, time
from starlette.testclient import TestClient
from radjax.commands import serve
start = time.perf_counter()
reader = serve.Reader(**{sys.argv[1]: sys.argv[2]})
ready = time.perf_counter() - start
data = pathlib.Path(sys.argv[3]).read_bytes()
times = []
with TestClient(serve.make_app(reader)) as client:
  for _ in range(5):
    start = time.perf_counter()
    answer = client.post("/predict", params={"name": "film.png"}, content=data).json()
    times.append(time.perf_counter() - start)
assert answer["error"] is None, answer
print(json.dumps({"start_s": ready, "answer_s": sorted(times)[2]}))
"""


def _python(code: str, *args: str) -> dict:
  done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        cwd=REPO, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def measure(workdir, film) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    model = pathlib.Path(tmp) / "model.radjax"
    subprocess.run([sys.executable, "-m", "radjax", "export", "--workdir", str(workdir), "--out",
                    str(model)], check=True, cwd=REPO, capture_output=True)
    meta = json.loads((model / "radjax.json").read_text())
    sizes = {f.name: f.stat().st_size for f in model.iterdir()}
    loading = _python(LOAD, str(model), str(film))
    from_model = _python(PAGE, "model", str(model), str(film))
  from_run = _python(PAGE, "workdir", str(workdir), str(film))
  machine = "unknown"
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      machine = line.split(":", 1)[1].strip()
      break
  import os

  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  return {"date": datetime.date.today().isoformat(), "commit": commit,
          "machine": f"{machine}, {len(os.sched_getaffinity(0))} cores",
          "image_size": meta["preprocessing"]["image_size"],
          "export_mib": round(sum(sizes.values()) / 2**20, 1), "files_bytes": sizes,
          **{k: round(v, 2) for k, v in loading.items()},
          "page_start_run_s": round(from_run["start_s"], 2),
          "page_answer_run_s": round(from_run["answer_s"], 2),
          "page_start_export_s": round(from_model["start_s"], 2),
          "page_answer_export_s": round(from_model["answer_s"], 2)}


def table(record: dict) -> str:
  """One measurement as a markdown table, headed by its image size, machine, date and commit."""
  rows = [("export size", f"{record['export_mib']} MiB"),
          ("import radjax.exported + load", f"{record['load_s']} s"),
          ("first prediction (compiles)", f"{record['first_predict_s']} s"),
          ("later prediction, one film", f"{record['warm_predict_s']} s"),
          ("page: start (load, compile, warm-up) from the run", f"{record['page_start_run_s']} s"),
          ("page: one answer from the run (with Grad-CAM)", f"{record['page_answer_run_s']} s"),
          ("page: start from the export", f"{record['page_start_export_s']} s"),
          ("page: one answer from the export", f"{record['page_answer_export_s']} s")]
  head = (f"| {record['image_size']}x{record['image_size']}, {record['machine']}, "
          f"{record['date']}, commit {record['commit']} | |\n|---|---|")
  return "\n".join([head] + [f"| {a} | {b} |" for a, b in rows])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", help="a trained run")
  parser.add_argument("--film", help="one PNG/JPEG/DICOM film to answer")
  parser.add_argument("--out", help="append the JSON line here")
  parser.add_argument("--table", metavar="JSONL", help="print the tables of earlier measurements")
  args = parser.parse_args(argv)
  if args.table:
    if not pathlib.Path(args.table).is_file():
      sys.exit(f"export_timing: {args.table}: no such file")
    lines = [line for line in open(args.table) if line.startswith("{")]
    print("\n\n".join(table(json.loads(line)) for line in lines))
    return 0
  if not (args.workdir and args.film):
    sys.exit("export_timing: --workdir and --film are required (or --table JSONL)")
  record = measure(args.workdir, args.film)
  print(json.dumps(record))
  print(table(record))
  if args.out:
    with open(args.out, "a") as f:
      f.write(json.dumps(record) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
