"""The examples run as a researcher runs them (at 75x75, one epoch), and what they write works with
radjax' own commands."""

import json
import pathlib

import pytest

from conftest import copy_subset
from radjax.commands import cli

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def small(dataset_dir, tmp_path_factory):
  """5 + 5 training and 2 + 2 validation images of the real dataset."""
  return copy_subset(dataset_dir, tmp_path_factory.mktemp("small"), {"TRAIN": 5, "VAL": 2})


@pytest.fixture
def examples(monkeypatch):
  monkeypatch.syspath_prepend(str(EXAMPLES))


def test_custom_loop_writes_a_checkpoint_evaluate_and_predict_accept(small, tmp_path, jit_cache,
                                                                     examples, capsys):
  import custom_loop

  workdir = tmp_path / "own"
  record = custom_loop.main(str(small), str(workdir), "--config.num_epochs=1",
                            f"--config.compilation_cache={jit_cache}")
  assert record["epoch"] == 1 and 0 <= record["val_accuracy"] <= 1
  assert cli.main(["evaluate", "--workdir", str(workdir), "--out", str(tmp_path / "eval")]) == 0
  evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  # The loop's own validation figures, from the same checkpoint and the same padded batches.
  assert evaluated["count"] == 4
  assert evaluated["auc"] == pytest.approx(record["val_auc"])
  assert evaluated["loss"] == pytest.approx(record["val_loss"], rel=1e-5)
  capsys.readouterr()
  film = next((small / "VAL" / "chest").glob("*.png"))
  assert cli.main(["predict", "--workdir", str(workdir), str(film)]) == 0
  out = capsys.readouterr().out
  assert film.name in out and ("chest" in out.split(film.name)[1] or "abd" in out)


@pytest.mark.slow
def test_custom_loss_trains_with_a_loss_radjax_does_not_ship(small, tmp_path, jit_cache,
                                                              examples, capsys):
  import custom_loss

  history = custom_loss.main(str(small), str(tmp_path / "brier"), "--config.num_epochs=1",
                             "--config.mixup_alpha=0.2", f"--config.compilation_cache={jit_cache}")
  out = capsys.readouterr().out
  assert "Loss: custom_loss:brier; validation loss is the plain cross-entropy." in out
  assert "Batch mixing: mixup, alpha 0.2" in out
  # A Brier score of a probability lies in [0, 1]; cross-entropy would not be bounded by 1.
  assert len(history) == 1 and 0 <= history[0]["loss"] <= 1
