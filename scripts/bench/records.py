"""Every figure the benchmark measures is a record: one JSON object, printed as a line the moment
it is measured (and appended to `--jsonl`), kept in RESULTS for the tables. A "machine" record
opens each run: CPU, cores, commit, JAX, XLA_FLAGS, devices and date, so that stored lines say
what they were measured on. `--table` reads stored lines back, tagged by file and machine."""

from __future__ import annotations

import json
import os
import platform

from bench import REPO

RESULTS: list[dict] = []
_JSONL = None  # --jsonl: a file every record is appended to as well
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")  # before radjax adds its defaults


def open_jsonl(path: str) -> None:
  """Appends every later record to `path` as well."""
  global _JSONL
  _JSONL = open(path, "a")


def emit(**record):
  # XLA_FLAGS change what XLA compiles (e.g. CUDA graphs): a radjax record names the ones it ran
  # under beyond radjax' own defaults (radjax.GPU_XLA_FLAGS, named in the "machine" record).
  if USER_XLA_FLAGS and record.get("impl") == "radjax":
    record.setdefault("xla_flags", USER_XLA_FLAGS)
  RESULTS.append(record)
  print(json.dumps(record), flush=True)
  if _JSONL is not None:
    _JSONL.write(json.dumps(record) + "\n")
    _JSONL.flush()


def commit() -> str:
  """The checkout's commit, "+changes" when tracked files differ from it; "" outside git."""
  import subprocess

  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

  head = git("rev-parse", "--short", "HEAD")
  return head + ("+changes" if head and git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict:
  cpu = platform.processor()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


SOURCE = "_source"  # where a record came from, for `--table`: file and machine


def tagged(name: str, records: list[dict]) -> list[dict]:
  """`records` of file `name`, each tagged with its file and the machine of the last "machine"
  record before it (runs appended to one file on one machine stay comparable)."""
  machine_of = None
  for r in records:
    if r.get("part") == "machine":
      machine_of = json.dumps({k: r.get(k) for k in ("cpu", "cores", "devices")}, sort_keys=True)
    r[SOURCE] = f"{name} {machine_of}"
  return records
