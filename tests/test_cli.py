"""The command line as a user meets it, and the package's shape (no import cycle, installable)."""

import ast
import pathlib
import subprocess
import sys
import zipfile

from radjax.commands import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_help_is_written_for_users(capsys):
  parser = cli.build_parser()
  text = parser.format_help()
  assert "radjax train --config hello_world --workdir runs/hello" in text
  assert "configs/default.py" in text
  for command in ("audit", "split", "augment-preview", "train", "evaluate", "predict",
                  "convert-weights"):
    assert command in text
  train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
  assert "configs/default.py" in train_help and "--config.NAME=VALUE" in train_help


def test_tensorflow_start_up_lines_are_hidden(dataset_dir, tmp_path):
  """TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) stays off the terminal."""
  out = subprocess.run([sys.executable, "-m", "radjax", "augment-preview", str(dataset_dir),
                        "--out", str(tmp_path / "aug.png"), "--n", "1"],
                       capture_output=True, text=True, check=True)
  assert "Wrote" in out.stdout
  for noise in ("cuda", "absl", "cpu_feature_guard", "oneDNN", "rebuild TensorFlow"):
    assert noise not in out.stderr, out.stderr


def _imports(path: pathlib.Path) -> set[str]:
  """radjax modules imported anywhere in `path` (function-level imports included)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("radjax"):
      found.add(node.module)
      found.update(f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("radjax"))
  return found


def test_the_package_has_no_import_cycle():
  root = REPO / "radjax"
  modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
  graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
  # A package's __init__ re-exporting its modules is not a cycle of the code.
  graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
  visiting, done, cycles = set(), set(), []

  def visit(m, path):
    if m in visiting:
      cycles.append(path[path.index(m):] + [m])
      return
    if m in done:
      return
    visiting.add(m)
    for n in sorted(graph[m]):
      visit(n, path + [m])
    visiting.discard(m)
    done.add(m)

  for m in sorted(graph):
    visit(m, [])
  assert not cycles, cycles


# Bottom to top. A module imports only from its own layer or the ones below it.
LAYERS = (("radjax", "radjax.errors", "radjax.cache", "radjax.configs"),
          ("radjax.data", "radjax.models", "radjax.metrics"),
          ("radjax.training", "radjax.exported"),
          ("radjax.commands", "radjax.__main__"))


def _layer(module: str) -> int:
  return max(k for k, layer in enumerate(LAYERS)
             for prefix in layer if module == prefix or module.startswith(prefix + "."))


def test_every_import_points_down_a_layer():
  """commands > training > data, models, metrics > errors and cache: the folders show the
  architecture. data, models and metrics are peers that do not import each other."""
  root = REPO / "radjax"
  upward = []
  for path in root.rglob("*.py"):
    module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for imported in _imports(path):
      if imported == "radjax" or imported.startswith("radjax.configs"):
        continue
      if _layer(imported) > _layer(module):
        upward.append(f"{module} -> {imported}")
      peers = {"radjax.data", "radjax.models", "radjax.metrics"}
      own = {p for p in peers if module.startswith(p)}
      other = {p for p in peers if imported.startswith(p + ".") or imported == p}
      if own and other and own != other:
        upward.append(f"{module} -> {imported} (peers)")
  assert not upward, sorted(set(upward))


def test_a_built_wheel_carries_the_configs(tmp_path):
  """`pip install .` (not editable) gives radjax.configs, so evaluate, predict and
  augment-preview need no configs/ folder on disk."""
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
  wheel = next(tmp_path.glob("radjax-*.whl"))
  names = set(zipfile.ZipFile(wheel).namelist())
  for name in ("default", "hello_world", "smoke"):
    assert f"radjax/configs/{name}.py" in names
  assert "radjax/models/stages.py" in names and "radjax/commands/cli.py" in names


def _error_line(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err
  return err.splitlines()[-1]


def test_outputs_that_name_the_wrong_kind_of_path_are_refused_before_any_work(tmp_path, capsys):
  a_file = tmp_path / "taken.txt"
  a_file.write_text("x")
  # The workdir does not even exist: the output is checked first.
  for command in (["evaluate", "--workdir", str(tmp_path / "none"), "--out", str(a_file)],
                  ["explain", "--workdir", str(tmp_path / "none"), "--out", str(a_file), "x.png"]):
    assert cli.main(command) == 2
    assert _error_line(capsys) == (f"radjax {command[0]}: error: --out {a_file}: is a file; name a "
                                   "folder for the outputs")
  assert cli.main(["augment-preview", "--image", "x.png", "--out", str(tmp_path)]) == 2
  assert _error_line(capsys) == (f"radjax augment-preview: error: --out {tmp_path}: is a folder; "
                                 "name the PNG file to write")
  assert cli.main(["predict", "--workdir", str(tmp_path / "none"), "--csv", str(tmp_path),
                   "x.png"]) == 2
  assert _error_line(capsys) == (f"radjax predict: error: --csv {tmp_path}: is a folder; name the "
                                 "CSV file to write")


def test_negative_seeds_are_refused_by_every_command(tmp_path, capsys):
  import pytest

  for command in (["split", "a", "b", "--val", "2", "--seed", "-1"],
                  ["predict", "--workdir", "w", "--tta", "2", "--seed", "-1", "x.png"],
                  ["augment-preview", "d", "--out", "o.png", "--seed", "-1"]):
    with pytest.raises(SystemExit) as exit_:
      cli.main(command)
    assert exit_.value.code == 2
    assert "argument --seed: expected a whole number >= 0, got -1" in _error_line(capsys)
  assert cli.main(["train", "--config", "smoke", "--workdir", str(tmp_path / "w"),
                   "--config.seed=-1"]) == 2
  assert _error_line(capsys) == "radjax train: error: --config.seed=-1: cannot be negative"


def test_ctrl_c_is_one_line_that_says_how_to_continue(monkeypatch, capsys):
  from radjax.commands import cv

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(cv, "cross_validate", interrupted)
  assert cli.main(["cv", "--config", "smoke", "--workdir", "w", "--folds", "2"]) == 130
  assert _error_line(capsys) == ("radjax cv: interrupted; the same command continues with the "
                                 "unfinished folds")


def test_each_input_gets_its_own_figure_even_when_names_repeat(tmp_path):
  from radjax.commands import explain

  files = [tmp_path / "TRAIN/abd/abd0.png", tmp_path / "VAL/abd/abd0.png",
           tmp_path / "patientA/IM0001.dcm", tmp_path / "patientB/IM0001.dcm"]
  out = explain.figure_paths(files, tmp_path / "ex")
  assert [p.relative_to(tmp_path / "ex").as_posix() for p in out] == [
      "TRAIN/abd/abd0.explain.png", "VAL/abd/abd0.explain.png",
      "patientA/IM0001.explain.png", "patientB/IM0001.explain.png"]
  assert [p.name for p in explain.figure_paths([files[0]], tmp_path)] == ["abd0.explain.png"]
  same_stem = [tmp_path / "a.png", tmp_path / "a.dcm"]
  assert [p.name for p in explain.figure_paths(same_stem, tmp_path)] == [
      "a.png.explain.png", "a.dcm.explain.png"]


def test_audit_of_a_csv_manifest_says_what_it_reads(tmp_path, capsys):
  manifest = tmp_path / "labels.csv"
  manifest.write_text("path,label,split\n")
  assert cli.main(["audit", str(manifest)]) == 2
  assert _error_line(capsys) == (f"radjax audit: error: {manifest}: is a file; this command reads "
                                 "a data folder (TRAIN/ and VAL/, or one folder per class), not a "
                                 "CSV manifest")


def test_no_command_imports_another_command():
  """A command parses, calls and prints; what two commands share lives a layer down (the
  scoring of files, decisions, evaluation, fold planning), so no command reaches into another.
  The parser, cli.py, is the one module that imports the commands."""
  root = REPO / "radjax" / "commands"
  reaching = []
  for path in sorted(root.glob("*.py")):
    if path.stem in ("cli", "__init__"):
      continue
    own = f"radjax.commands.{path.stem}"
    for imported in _imports(path):
      if imported.startswith("radjax.commands") and not imported.startswith(own):
        reaching.append(f"{own} -> {imported}")
  assert not reaching, reaching


# The parser lists every command and flag; everything else stays readable in one sitting.
MAX_MODULE_LINES = 450


def test_no_module_of_the_package_or_the_scripts_exceeds_a_sitting():
  files = [p for p in (REPO / "radjax").rglob("*.py") if p.name != "cli.py"]
  files += list((REPO / "scripts").rglob("*.py"))
  long = {str(p.relative_to(REPO)): n for p in files
          if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
  assert not long, long
