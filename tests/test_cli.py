"""The command line as a user meets it, and the package's shape (no import cycle, installable)."""

import ast
import pathlib
import subprocess
import sys
import zipfile

from radjax import cli

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
  out = subprocess.run([sys.executable, "-m", "radjax.cli", "augment-preview", str(dataset_dir),
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


def test_a_built_wheel_carries_the_configs(tmp_path):
  """`pip install .` (not editable) gives radjax.configs, so evaluate, predict and
  augment-preview need no configs/ folder on disk."""
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
  wheel = next(tmp_path.glob("radjax-*.whl"))
  names = set(zipfile.ZipFile(wheel).namelist())
  for name in ("default", "hello_world", "smoke"):
    assert f"radjax/configs/{name}.py" in names
  assert "radjax/models/stages.py" in names and "radjax/cli.py" in names
