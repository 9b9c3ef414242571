#!/usr/bin/env python
"""Writes the documentation's measured tables from the JSON lines in scripts/results/.

A generated table sits between two comments that name the command printing it:

  <!-- generated: python scripts/benchmark.py --table scripts/results/FILE.jsonl -->
  ...the command's output...
  <!-- end generated -->

    python scripts/docs_tables.py            # rewrite every block in README.md and docs/*.md
    python scripts/docs_tables.py --check    # exit 1, naming the block, if any is out of date

Only the scripts' own `--table` printers may be named: a block is the output of reading stored
measurements, never of measuring.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (?P<command>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.DOTALL)
TABLE_SCRIPTS = ("benchmark.py", "benchmark_scale.py", "export_timing.py", "robustness.py")


def documents() -> list[pathlib.Path]:
  return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def output_of(command: str, where: str) -> str:
  """What `command` prints, run from the repository root with this Python."""
  words = shlex.split(command)
  if (len(words) < 4 or words[0] != "python" or not words[1].startswith("scripts/")
      or pathlib.Path(words[1]).name not in TABLE_SCRIPTS or words[2] != "--table"):
    sys.exit(f"docs_tables: {where}: '{command}' is not 'python scripts/SCRIPT.py --table FILE' "
             f"with SCRIPT one of {', '.join(TABLE_SCRIPTS)}")
  done = subprocess.run([sys.executable, *words[1:]], cwd=REPO, capture_output=True, text=True)
  if done.returncode != 0:
    sys.exit(f"docs_tables: {where}: '{command}' failed: {done.stderr.strip()[-300:]}")
  return done.stdout.rstrip("\n") + "\n"


def refreshed(path: pathlib.Path, root: pathlib.Path = REPO) -> tuple[str, list[str]]:
  """The document with every generated block rewritten, and the commands whose output changed
  (commands run from the repository; `root`: what the document's name is given relative to)."""
  text = path.read_text()
  changed = []

  def rewrite(match: re.Match) -> str:
    body = output_of(match["command"], str(path.relative_to(root)))
    if body != match["body"]:
      changed.append(match["command"])
    return f"{match.group(1)}{body}{match.group(4)}"

  return BLOCK.sub(rewrite, text), changed


def main(argv=None, paths=None, root: pathlib.Path = REPO) -> int:
  """`paths`: the documents (default: README.md and docs/*.md), named relative to `root`."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="change nothing; exit 1 if a block differs from its command's output")
  args = parser.parse_args(argv)
  stale = []
  for path in documents() if paths is None else paths:
    text, changed = refreshed(path, root)
    name = path.relative_to(root)
    stale += [f"{name}: {command}" for command in changed]
    if changed and not args.check:
      path.write_text(text)
      print(f"{name}: {len(changed)} table(s) rewritten")
  if args.check and stale:
    print("out of date (run python scripts/docs_tables.py):\n" + "\n".join(stale),
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
