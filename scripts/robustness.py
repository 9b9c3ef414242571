"""hello_world vs robust, side by side: validation figures, stress flip rates, cross-validated AUC.

  python scripts/robustness.py --data ../shared/datasets/open_i_abd_vs_cxr \
      --workdir runs/robustness --out scripts/results/cpu-DATE-robustness.jsonl

For each config, as a user would run them (each command a fresh process): `radjax train` from
random initialisation (no ImageNet file offline) at --image-size, `radjax evaluate` (which picks
the operating point on VAL), `radjax stress` at that operating point, and `radjax cv` with
--folds folds. Prints a table and appends one JSON line per config (machine, date, commit, every
figure and how long each step took). About 45 minutes on 2 CPU cores at the defaults.
A finished step is not run again (each command resumes or reuses its workdir), so an interrupted
comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("hello_world", "robust")
HEADLINE_GROUPS = ("framing", "burned-in")  # the families the robust target is about


def _run(*args: str) -> float:
  """`radjax ARGS` in a fresh process; its seconds. Output goes to this process's."""
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "radjax", *args], check=True, cwd=REPO)
  return time.perf_counter() - start


def _machine() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return f"{line.split(':', 1)[1].strip()}, {len(__import__('os').sched_getaffinity(0))} cores"
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def compare(data, workdir, image_size: int, epochs: int, cv_epochs: int, folds: int,
            configs=CONFIGS) -> list[dict]:
  """Runs every step for every config; returns one record per config."""
  records = []
  for name in configs:
    run = pathlib.Path(workdir) / name
    settings = [f"--config.data_dir={data}", "--config.weights=none",
                f"--config.image_size={image_size}"]
    times = {"train": _run("train", "--config", name, "--workdir", str(run / "train"), *settings,
                           f"--config.num_epochs={epochs}"),
             "evaluate": _run("evaluate", "--workdir", str(run / "train")),
             "stress": _run("stress", "--workdir", str(run / "train")),
             "cv": _run("cv", "--config", name, "--workdir", str(run / "cv"), "--folds",
                        str(folds), *settings, f"--config.num_epochs={cv_epochs}")}
    evaluated = json.loads((run / "train" / "metrics.json").read_text())
    stress = json.loads((run / "train" / "stress.json").read_text())
    cv = json.loads((run / "cv" / "cv.json").read_text())
    seed = next(iter(cv["per_seed"].values()))
    moderate = {r["family"]: r["flip_rate"] for r in stress["conditions"]
                if r["moderate"] and r["family"] != "clean"}
    worst = {f"{r['family']} {r['label']}": r["flip_rate"] for r in stress["conditions"]
             if r["group"] in HEADLINE_GROUPS}
    records.append({
        "config": name, "machine": _machine(), "date": datetime.date.today().isoformat(),
        "commit": _commit(), "image_size": image_size, "epochs": epochs, "cv_epochs": cv_epochs,
        "folds": folds, "weights": "none",
        "val": {"epoch": evaluated["epoch"], "auc": evaluated["auc"],
                "auc_interval": evaluated["intervals"]["auc"],
                "accuracy": evaluated["accuracy"],
                "accuracy_interval": evaluated["exact_intervals"]["accuracy"]},
        "stress": {"moderate_flip_rate": moderate,
                   "moderate_framing_burned_in_max": max(
                       v for k, v in moderate.items()
                       if any(r["family"] == k and r["group"] in HEADLINE_GROUPS
                              for r in stress["conditions"])),
                   "framing_burned_in_any_strength_max": max(worst.values()),
                   "clean_auc": stress["conditions"][0]["auc"]},
        "cv": {"auc": seed["pooled"]["auc"], "auc_interval": seed["intervals"]["auc"],
               "accuracy": seed["pooled"]["accuracy"],
               "accuracy_interval": seed["exact_intervals"]["accuracy"]},
        "seconds": {k: round(v, 1) for k, v in times.items()}})
  return records


def table(records: list[dict]) -> str:
  """The records side by side, a row per figure."""
  def interval(value, bounds):
    return f"{value:.3f} ({bounds[0]:.3f}-{bounds[1]:.3f})"

  rows = [("val AUC (95% CI)", lambda r: interval(r["val"]["auc"], r["val"]["auc_interval"])),
          ("val accuracy (exact 95% CI)",
           lambda r: interval(r["val"]["accuracy"], r["val"]["accuracy_interval"])),
          (f"{records[0]['folds']}-fold CV AUC (95% CI)",
           lambda r: interval(r["cv"]["auc"], r["cv"]["auc_interval"])),
          ("CV accuracy (exact 95% CI)",
           lambda r: interval(r["cv"]["accuracy"], r["cv"]["accuracy_interval"]))]
  families = list(records[0]["stress"]["moderate_flip_rate"])
  rows += [(f"flips, {f} (moderate)", lambda r, f=f: f"{r['stress']['moderate_flip_rate'][f]:.0%}")
           for f in families]
  rows += [("flips, framing + burned-in, worst at moderate",
            lambda r: f"{r['stress']['moderate_framing_burned_in_max']:.0%}"),
           ("flips, framing + burned-in, worst at any strength",
            lambda r: f"{r['stress']['framing_burned_in_any_strength_max']:.0%}")]
  lines = ["| | " + " | ".join(r["config"] for r in records) + " |",
           "|---|" + "---|" * len(records)]
  lines += [f"| {label} | " + " | ".join(show(r) for r in records) + " |" for label, show in rows]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", help="dataset folder (TRAIN/, VAL/)")
  parser.add_argument("--workdir", help="folder for the runs")
  parser.add_argument("--table", metavar="JSONL",
                      help="only print the table of the records in this file (no runs)")
  parser.add_argument("--out", help="append the JSON lines here")
  parser.add_argument("--image-size", type=int, default=150)
  parser.add_argument("--epochs", type=int, default=20, help="of the training runs (default 20)")
  parser.add_argument("--cv-epochs", type=int, default=15, help="of each fold (default 15)")
  parser.add_argument("--folds", type=int, default=5)
  parser.add_argument("--configs", default=",".join(CONFIGS))
  args = parser.parse_args(argv)
  if args.table:
    if not pathlib.Path(args.table).is_file():
      sys.exit(f"robustness: {args.table}: no such file")
    records = [json.loads(line) for line in pathlib.Path(args.table).read_text().splitlines()
               if line.strip()]
    print(table(records))
    return 0
  if not (args.data and args.workdir):
    parser.error("--data and --workdir are needed to run the comparison (or --table JSONL)")
  records = compare(args.data, args.workdir, args.image_size, args.epochs, args.cv_epochs,
                    args.folds, args.configs.split(","))
  for r in records:
    print(json.dumps(r))
  print(table(records))
  if args.out:
    with open(args.out, "a") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
  return 0


if __name__ == "__main__":
  sys.exit(main())
