"""The suite's learning tests over seeds: what each recorded, and whether it passed.

    python scripts/learning_margins.py --seeds 0 1 2 3 4 [--out margins.jsonl] [TEST ...]

Each learning test draws its data and trains with `--learning-seed` (tests/conftest.py) and
records what its assertions are about (`record_property`: an AUC, a loss, a flip rate). This runs
the tests once per seed in a pytest process of its own, reads those records from pytest's JUnit
XML, and prints a JSON line per (test, seed) and a table of each quantity's range over the seeds:
the numbers a learning test's comment quotes and its margin is set from.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

REPO = pathlib.Path(__file__).resolve().parents[1]
LEARNING_TESTS = (
    "tests/test_stress.py::test_a_model_that_reads_a_band_flips_under_the_band_family_only",
    "tests/test_multilabel.py::test_a_findings_csv_trains_three_sigmoid_logits_that_learn_the_squares",
    "tests/test_multilabel.py::test_evaluate_chooses_each_labels_operating_point_on_val",
    "tests/test_multiclass.py::test_three_class_folders_train_a_softmax_head_that_learns_the_markers",
    "tests/test_multiclass.py::test_stress_flips_are_changes_of_the_most_probable_class",
    "tests/test_explain.py::test_maps_of_a_model_that_uses_a_marker_point_at_the_marker",
)


def records(junit_xml: pathlib.Path, seed: int) -> list[dict]:
  """One record per test case of a JUnit XML file: its outcome and recorded properties."""
  out = []
  for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
    outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
               else "skipped" if case.find("skipped") is not None else "passed")
    properties = {p.get("name"): _number(p.get("value")) for p in case.iter("property")}
    out.append({"test": f"{case.get('classname')}::{case.get('name')}", "seed": seed,
                "outcome": outcome, "properties": properties})
  return out


def _number(text: str):
  try:
    return float(text)
  except (TypeError, ValueError):
    return text


def table(rows: list[dict]) -> str:
  """Per test and recorded quantity: its values over the seeds (numbers: min-max), and the
  outcomes."""
  lines = [f"{'test':<72}{'quantity':<26}{'over seeds':<28}outcomes"]
  tests = dict.fromkeys(r["test"] for r in rows)
  for test in tests:
    own = [r for r in rows if r["test"] == test]
    outcomes = " ".join(f"{r['seed']}:{r['outcome'][0]}" for r in own)
    names = dict.fromkeys(n for r in own for n in r["properties"])
    for i, name in enumerate(names or [""]):
      values = [r["properties"][name] for r in own if name in r["properties"]]
      numbers = [v for v in values if isinstance(v, float)]
      shown = (f"{min(numbers):.3f}-{max(numbers):.3f}" if numbers and len(numbers) == len(values)
               else " ".join(map(str, values)))
      lines.append(f"{test.split('.')[-1] if i == 0 else '':<72}{name:<26}{shown:<28}"
                   f"{outcomes if i == 0 else ''}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("tests", nargs="*", default=list(LEARNING_TESTS),
                      help="pytest node ids (default: the suite's learning tests)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  parser.add_argument("--out", type=pathlib.Path, help="also append the JSON lines to this file")
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for seed in args.seeds:
      junit = pathlib.Path(scratch) / f"seed{seed}.xml"
      subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                      "slow", f"--learning-seed={seed}", f"--junitxml={junit}",
                      "-o", "junit_family=xunit1", *args.tests], cwd=REPO)
      if not junit.exists():
        print(f"seed {seed}: pytest wrote no report", file=sys.stderr)
        return 1
      for record in records(junit, seed):
        rows.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        if args.out:
          with args.out.open("a") as f:
            f.write(line + "\n")
  print(table(rows))
  return 0 if all(r["outcome"] == "passed" for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
