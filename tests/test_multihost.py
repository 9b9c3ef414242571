"""Several processes (hosts): each prepares only its rows of every batch, and two CPU processes
joined by `jax.distributed` train exactly what one process with two devices trains."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from radjax.data import arrays, datasets, files, listing
from radjax.training import config as config_lib
from conftest import copy_subset

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(dataset_dir, tmp_path_factory):
  return copy_subset(dataset_dir, tmp_path_factory.mktemp("tiny"), {"TRAIN": 5, "VAL": 3})


def _sources(tiny_data, tmp_path):
  config = config_lib.load_config("smoke", [f"--config.data_dir={tiny_data}"])
  npz = tmp_path / "tiny.npz"
  arrays.export(config, npz, datasets.list_every_split(tiny_data))
  device = config_lib.load_config("smoke", [f"--config.data_dir={npz}",
                                            "--config.augment_on=device"])
  return files.Pipeline(listing.list_folders(tiny_data), config), \
      arrays.ArrayPipeline(arrays.load(npz), device)


def test_process_shards_of_the_training_batches_make_up_the_global_batches(tiny_data, tmp_path):
  for source in _sources(tiny_data, tmp_path):
    whole = list(source.train_batches(4, 1, 2))
    parts = [list(source.train_batches(4, 1, 2, shard=(i, 2))) for i in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 4  # 2 steps of 4 per epoch
    for batch, first, second in zip(whole, *parts):
      for key in batch:
        assert first[key].shape[0] == second[key].shape[0] == 2
        np.testing.assert_array_equal(batch[key], np.concatenate([first[key], second[key]]))
    # Precise BN's batches: the same rows of the same global batches.
    whole = list(source.recalibration_batches(4))
    parts = [list(source.recalibration_batches(4, shard=(i, 2))) for i in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 2  # 10 images: 2 full batches of 4
    for batch, first, second in zip(whole, *parts):
      for key in batch:
        np.testing.assert_array_equal(batch[key], np.concatenate([first[key], second[key]]))


def test_each_process_evaluates_its_own_contiguous_share_padded_to_one_shape(tiny_data, tmp_path):
  for source in _sources(tiny_data, tmp_path):
    whole = list(source.eval_batches("val", 4))  # 6 images: 4 + 2 padded
    assert [int(b["mask"].sum()) for b in whole] == [4, 2]
    parts = [list(source.eval_batches("val", 4, shard=(i, 2))) for i in range(2)]
    # Images 0-2 and 3-5, two rows a batch: two batches each, the second padded to 2 rows.
    for i, part in enumerate(parts):
      assert [b["image"].shape[0] for b in part] == [2, 2]
      assert [int(b["mask"].sum()) for b in part] == [2, 1]
      assert np.concatenate([b["index"][b["mask"]] for b in part]).tolist() == \
          [3 * i, 3 * i + 1, 3 * i + 2]
    real = {k: np.concatenate([b[k][b["mask"]] for part in parts for b in part])
            for k in ("image", "label", "index")}
    for key, value in real.items():
      np.testing.assert_array_equal(value, np.concatenate([b[key][b["mask"]] for b in whole]))
    # More processes than a split has images: the ones without any still yield padded batches.
    lonely = list(source.eval_batches("val", 8, shard=(3, 4)))
    assert [int(b["mask"].sum()) for b in lonely] == [0] and lonely[0]["image"].shape[0] == 2


RUN = """
import json, sys
who, port, data_dir, workdir, cache = sys.argv[1:6]
import jax
if who != "single":  # one of two processes, one CPU device each
  # Three processes share 2 cores: generous timeouts, so a slow machine is not a failed run.
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(who),
                             initialization_timeout=900, heartbeat_timeout_seconds=900,
                             shutdown_timeout_seconds=900)
from radjax.training import config as config_lib, loop as train
config = config_lib.load_config("smoke", [
    f"--config.data_dir={data_dir}", "--config.num_epochs=1", "--config.batch_size=4",
    "--config.eval_batch_size=4", f"--config.compilation_cache={cache}"])
history = train.train_and_evaluate(config, workdir)
print("HISTORY " + json.dumps(history))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _history(output: str) -> list[dict]:
  line = next(l for l in output.splitlines() if l.startswith("HISTORY "))
  return json.loads(line.removeprefix("HISTORY "))


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_two_devices_trains(tiny_data, jit_cache,
                                                                      tmp_path):
  # Unoptimised XLA: a third of the compile time; both set-ups compile the same way.
  env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
  port = _free_port()
  args = [str(port), str(tiny_data), str(tmp_path / "distributed"), jit_cache]
  commands = [([str(i), *args], env) for i in range(2)] + [
      (["single", "0", str(tiny_data), str(tmp_path / "single"), jit_cache],
       {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})]
  processes = [subprocess.Popen([sys.executable, "-c", RUN, *argv], env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for argv, environment in commands]  # all three at once
  results = [p.communicate(timeout=1200) for p in processes]
  for p, (out, err) in zip(processes, results):
    assert p.returncode == 0, err[-3000:]
  outputs, expected = results[:2], _history(results[2][0])

  assert "Data:" in outputs[0][0] and "Data:" not in outputs[1][0]  # the first process reports
  for out, _ in outputs:
    got = _history(out)
    assert len(got) == len(expected) == 1
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc"):
      assert got[0][key] == pytest.approx(expected[0][key], rel=1e-5), key
  # One report, written by the first process; the checkpoint written together, complete.
  written = [json.loads(l) for l in (tmp_path / "distributed" / "metrics.jsonl").read_text()
             .splitlines()]
  assert [r["epoch"] for r in written] == [1]
  assert (tmp_path / "distributed" / "checkpoints" / "1").is_dir()
