"""The documentation cannot rot: the README stays a short guide, every command, flag and setting
the docs name exists, the measured tables are what their JSON lines say, the site builds
strictly, and (slow) the README's quick start runs as written, at a small size."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from radjax.commands import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHARED_DATA = "../shared/datasets/open_i_abd_vs_cxr"

FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # a span may wrap onto a second line


def commands_of(text: str) -> list[str]:
  """Every command line in fenced blocks (continuation lines joined, comments dropped) and every
  inline code span."""
  lines = []
  for block in FENCE.findall(text):
    joined = re.sub(r"\\\n\s*", " ", block)
    lines += [line.split(" #")[0].strip() for line in joined.splitlines()]
  prose = FENCE.sub("", text)
  return [line for line in lines + [span.replace("\n", " ") for span in INLINE.findall(prose)]
          if line]


def radjax_parsers() -> dict:
  parser = cli.build_parser()
  (subcommands,) = [a for a in parser._actions if a.choices and "train" in a.choices]
  return dict(subcommands.choices)


def option_strings(parser) -> set[str]:
  return {s for action in parser._actions for s in action.option_strings}


def config_fields() -> set[str]:
  from radjax.configs import default

  def walk(config, prefix=""):
    for key, value in config.items():
      yield prefix + key
      if hasattr(value, "items"):
        yield from walk(value, f"{prefix}{key}.")

  return set(walk(default.get_config()))


@functools.cache
def script_flags(script: str) -> set[str]:
  done = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True,
                        text=True, cwd=REPO, check=True)
  return set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))


def test_readme_is_a_short_guide_without_development_history():
  readme = (REPO / "README.md").read_text()
  assert len(readme.splitlines()) <= 200
  for heading in ("## Install", "## Quick start", "## Every command", "## Tests", "## Read on"):
    assert heading in readme
  for path in DOCS:
    text = path.read_text()
    found = re.findall(r"(?i)\bissues?\s*#?\d+|(?<![\w/&])#\d+\b", text)
    assert not found, f"{path.name} refers to issue numbers: {found}"


def test_every_command_named_in_the_readme_table_is_a_radjax_command():
  readme = (REPO / "README.md").read_text()
  table = readme.split("## Every command")[1].split("\n## ")[0]
  named = set(re.findall(r"^\| `radjax ([a-z-]+)", table, re.MULTILINE))
  assert named == set(radjax_parsers())


def test_commands_flags_and_settings_named_in_the_docs_exist():
  parsers, fields = radjax_parsers(), config_fields()
  scripts = {f"scripts/{p.name}": script_flags(f"scripts/{p.name}")
             for p in sorted((REPO / "scripts").glob("*.py")) if "argparse" in p.read_text()}
  every_flag = set().union(*(option_strings(p) for p in parsers.values()), *scripts.values())
  problems, checked = [], 0
  for path in DOCS:
    for line in commands_of(path.read_text()):
      words = line.replace("=", " ").split()
      for setting in re.findall(r"--config\.([a-z_][a-z0-9_.]*[a-z0-9_])", line):
        checked += 1
        if setting not in fields:
          problems.append(f"{path.name}: --config.{setting} is no setting ({line})")
      command = re.match(r"(?:srun )?radjax ([a-z][a-z-]*)(.*)", line)
      script = re.match(r"python (scripts/[a-z_]+\.py)(.*)", line)
      if command:
        name, rest = command.groups()
        checked += 1
        if name not in parsers:
          problems.append(f"{path.name}: radjax {name} is no command ({line})")
          continue
        flags, known = re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest), option_strings(parsers[name])
      elif script:
        name, rest = script.groups()
        flags, known = re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest), scripts.get(name, set())
      elif words and re.fullmatch(r"--[a-z][a-z0-9-]*", words[0]):
        flags, known = words[:1], every_flag  # a flag named alone in prose
      else:
        continue
      for flag in flags:
        checked += 1
        if flag not in known | {"--help"}:
          problems.append(f"{path.name}: {flag} is not a flag of '{line}'")
      if command and flags and name in parsers:
        missing = required_missing(line)
        if missing:
          problems.append(f"{path.name}: '{line}' lacks {missing}")
  assert not problems, "\n".join(problems)
  assert checked > 150  # the docs were read, not skipped


def required_missing(line: str) -> str:
  """What a radjax command line written with flags lacks that its parser requires ("" if
  nothing); a bare `radjax CMD` naming a command in prose is not a command line."""
  argv = shlex.split(line.split("radjax ", 1)[1])
  stderr = io.StringIO()
  try:
    with contextlib.redirect_stderr(stderr):
      cli.build_parser().parse_known_args(argv)
  except SystemExit:
    error = stderr.getvalue().strip().splitlines()[-1]
    if "are required" in error or "one of the arguments" in error:
      return error.split("error: ", 1)[1]
  return ""


def test_a_documented_command_without_a_required_argument_is_caught():
  assert required_missing("radjax cv --config hello_world --folds 5") == (
      "the following arguments are required: --workdir")
  assert required_missing("radjax serve --port 8000") == (
      "one of the arguments --workdir --model is required")
  assert required_missing("radjax cv --config C --workdir W --folds 5 --config.weights=none") == ""


def test_the_checker_notices_a_missing_command_flag_and_setting(tmp_path, monkeypatch):
  page = tmp_path / "page.md"
  page.write_text("```bash\nradjax evaluate --workdir w --bogus-flag 1\nradjax trian --config c\n"
                  "radjax train --config.num_epoch=3\n```\nand `--no-such-flag` in prose\n")
  monkeypatch.setattr(sys.modules[__name__], "DOCS", [page])
  with pytest.raises(AssertionError) as failure:
    test_commands_flags_and_settings_named_in_the_docs_exist()
  message = str(failure.value)
  for wrong in ("--bogus-flag", "radjax trian", "--config.num_epoch", "--no-such-flag"):
    assert wrong in message


def test_measured_tables_are_printed_from_their_json_lines():
  done = subprocess.run([sys.executable, "scripts/docs_tables.py", "--check"], cwd=REPO,
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  results = (REPO / "docs" / "results.md").read_text()
  assert results.count("<!-- generated: ") >= 6


@pytest.fixture
def docs_tables():
  sys.path.insert(0, str(REPO / "scripts"))
  try:
    import docs_tables
  finally:
    sys.path.pop(0)
  return docs_tables


def test_a_stale_table_is_reported(tmp_path, docs_tables):
  page = tmp_path / "page.md"
  command = "python scripts/export_timing.py --table scripts/results/cpu-2026-12-04-export.jsonl"
  page.write_text(f"x\n<!-- generated: {command} -->\n| old | table |\n<!-- end generated -->\n")
  text, changed = docs_tables.refreshed(page, root=tmp_path)
  assert changed == [command]
  assert "| export size | 85.5 MiB |" in text and "| old | table |" not in text
  page.write_text(text)
  assert docs_tables.refreshed(page, root=tmp_path) == (text, [])


def test_check_fails_on_a_stale_block_and_a_plain_run_rewrites_it(tmp_path, capsys,
                                                                  docs_tables):
  page = tmp_path / "page.md"
  command = "python scripts/export_timing.py --table scripts/results/cpu-2026-12-04-export.jsonl"
  stale = f"x\n<!-- generated: {command} -->\n| old | table |\n<!-- end generated -->\n"
  page.write_text(stale)
  assert docs_tables.main(["--check"], paths=[page], root=tmp_path) == 1
  assert page.read_text() == stale  # --check changes nothing
  assert f"page.md: {command}" in capsys.readouterr().err
  assert docs_tables.main([], paths=[page], root=tmp_path) == 0
  assert "| export size | 85.5 MiB |" in page.read_text()
  assert capsys.readouterr().out == "page.md: 1 table(s) rewritten\n"
  assert docs_tables.main(["--check"], paths=[page], root=tmp_path) == 0


@pytest.mark.parametrize("command,message", [
    ("python scripts/benchmark.py --parts step", "is not 'python scripts/SCRIPT.py --table FILE'"),
    ("rm -rf /", "is not 'python scripts/SCRIPT.py --table FILE'"),
    ("python scripts/gpu_figures.py --table f.jsonl", "is not 'python scripts/SCRIPT.py --table FILE'"),
    ("python scripts/export_timing.py --table scripts/results/none.jsonl",
     "failed: export_timing: scripts/results/none.jsonl: no such file")])
def test_a_block_that_names_no_stored_table_is_one_line(tmp_path, command, message):
  page = tmp_path / "docs" / "page.md"
  page.parent.mkdir()
  page.write_text(f"<!-- generated: {command} -->\n<!-- end generated -->\n")
  done = subprocess.run([sys.executable, "-c", "import sys, pathlib; sys.path.insert(0, 'scripts');"
                         "import docs_tables; docs_tables.refreshed(pathlib.Path(sys.argv[1]), "
                         "pathlib.Path(sys.argv[2]))", str(page), str(tmp_path)],
                        cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 1
  (line,) = done.stderr.strip().splitlines()
  assert line.startswith(f"docs_tables: docs/page.md: '{command}' {message}")


@pytest.mark.parametrize("script,args,line", [
    ("export_timing.py", ["--workdir", "w"],
     "export_timing: --workdir and --film are required (or --table JSONL)"),
    ("export_timing.py", ["--table", "none.jsonl"], "export_timing: none.jsonl: no such file"),
    ("benchmark_scale.py", ["--table", "none.jsonl"], "benchmark_scale: none.jsonl: no such file"),
    ("robustness.py", ["--table", "none.jsonl"], "robustness: none.jsonl: no such file")])
def test_the_table_scripts_name_a_missing_file_or_argument_in_one_line(script, args, line):
  done = subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=REPO,
                        capture_output=True, text=True)
  assert done.returncode == 1 and done.stderr.strip().splitlines() == [line]


def test_the_site_builds_strictly(tmp_path):
  done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                         str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
  assert done.returncode == 0, done.stderr[-2000:]
  index = (tmp_path / "site" / "index.html").read_text()
  assert "A first run, in about a minute" in index  # the README's quick start, included


def quick_start() -> list[str]:
  readme = (REPO / "README.md").read_text()
  section = readme.split("[start:quickstart]")[1].split("[end:quickstart]")[0]
  return [line for line in commands_of(section) if line.startswith("radjax ")]


def test_the_quick_starts_imagenet_run_is_its_offline_run_with_imagenet_weights():
  commands = quick_start()
  trains = [c for c in commands if c.startswith("radjax train --config hello_world")]
  assert len(trains) == 2
  assert trains[1] == f"{trains[0]} --config.weights=none"


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_written_at_a_small_size(tmp_path, dataset_dir, jit_cache):
  """Each command as the README writes it, in a fresh process, the dataset where the README says
  (`../shared/...` from the repository); training smaller and shorter the way a user would ask:
  `--config.image_size=75 --config.num_epochs=1` appended. The ImageNet run needs the network and
  is the offline one plus its weights (test above)."""
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": jit_cache, "TF_CPP_MIN_LOG_LEVEL": "3"}
  ran = []
  for command in quick_start():
    if command.startswith("radjax train --config hello_world") and "weights=none" not in command:
      continue
    argv = shlex.split(command.replace(" runs/", f" {tmp_path}/runs/")
                       .replace(" explain/", f" {tmp_path}/explain/"))
    if argv[1] == "train":
      argv += ["--config.image_size=75", "--config.num_epochs=1"]
    done = subprocess.run([sys.executable, "-m", "radjax", *argv[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    ran.append((argv[1], done.stdout))
  assert [name for name, _ in ran] == ["train", "train", "evaluate", "predict", "explain"]
  assert (tmp_path / "runs" / "smoke" / "curves.png").is_file()
  assert (tmp_path / "runs" / "hello" / "curves.png").is_file()
  predict_out = dict(ran)["predict"]
  assert "chst_val0.png" in predict_out and re.search(r"\b(abd|chest)\b", predict_out)
  explained = sorted(p.name for p in (tmp_path / "explain").rglob("*.explain.png"))
  assert explained == sorted(f"{p.stem}.explain.png" for p in (dataset_dir / "VAL" / "abd").iterdir())
