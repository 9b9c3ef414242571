"""Checkpoints: damaged ones (reading, resuming), the best one; the workdir's lock and checks."""

import errno
import fcntl
import gc
import logging
import os
import pathlib
import subprocess
import sys

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radjax.training import checkpoints, workdir
from radjax.errors import UserError

# Orbax leaves coroutines of a failed restore un-awaited; their GeneratorExit noise is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_orbax_leftovers():
  yield
  gc.collect()  # here, under the filter above, rather than in whichever test runs next


class State(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: dict


def make_state(seed: int) -> State:
  # 64x64 float32 is over OCDBT's 1 KiB inline limit, so the kernel goes to its own data file.
  rng = np.random.default_rng(seed)
  return State(step=jnp.asarray(10 * seed, jnp.int32),
               params={"dense": {"kernel": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
                                 "bias": jnp.asarray(rng.normal(size=64), jnp.float32)}},
               batch_stats={"bn": {"mean": jnp.asarray(rng.normal(size=64), jnp.float32)}},
               opt_state={"mu": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)})


def meta_of(epoch: int, val_auc: float, val_loss: float) -> dict:
  return {"epoch": epoch, "class_names": ["abd", "chest"],
          "metrics": {"epoch": epoch, "val_auc": val_auc, "val_loss": val_loss}}


def save_epochs(path, metrics: dict[int, tuple[float, float]], keep: int = 10) -> None:
  with checkpoints.manager(path, keep=keep) as mngr:
    for epoch, (auc, loss) in metrics.items():
      checkpoints.save(mngr, epoch, make_state(epoch), meta_of(epoch, auc, loss))


def assert_trees_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.asarray(x).dtype == np.asarray(y).dtype


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file()}


def largest_model_file(path: pathlib.Path, epoch: int) -> pathlib.Path:
  """The file holding the kernel's bytes (Orbax: model/ocdbt.process_0/d/<hash>)."""
  files = [p for p in (path / "checkpoints" / str(epoch) / "model").rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def damage(path: pathlib.Path, epoch: int, how: str) -> None:
  target = largest_model_file(path, epoch)
  if how == "delete":
    target.unlink()
  else:
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


THREE = {1: (0.6, 0.5), 2: (0.7, 0.4), 3: (0.8, 0.3)}


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_latest_is_named_with_the_intact_ones(tmp_path, how):
  save_epochs(tmp_path, THREE)
  damage(tmp_path, 3, how)
  before = snapshot(tmp_path)
  with pytest.raises(UserError) as raised:
    checkpoints.load_for_inference(tmp_path, "latest")
  message = str(raised.value)
  assert message.startswith(f"{(tmp_path / 'checkpoints' / '3').absolute()}: checkpoint of epoch 3 "
                            "is damaged (")
  assert message.endswith("); intact checkpoints: epochs 1, 2 (use --checkpoint N)")
  assert "\n" not in message
  with checkpoints.manager(tmp_path, keep=None, create=False) as mngr:
    with pytest.raises(UserError, match="epoch 3 is damaged.*epochs 1, 2"):
      checkpoints.choose(mngr, "latest")
    with pytest.raises(UserError, match="epoch 3 is damaged"):
      checkpoints.choose(mngr, "3")
    assert checkpoints.choose(mngr, "2") == 2
  variables, meta, epoch = checkpoints.load_for_inference(tmp_path, "2")
  expected = make_state(2)
  assert epoch == 2 and meta == meta_of(2, *THREE[2])
  assert_trees_equal(variables, {"params": expected.params, "batch_stats": expected.batch_stats})
  assert snapshot(tmp_path) == before  # readers move and delete nothing


def test_restore_for_resume_sets_damaged_checkpoints_aside(tmp_path, caplog):
  save_epochs(tmp_path, THREE)
  damage(tmp_path, 3, "truncate")
  damaged_files = snapshot(tmp_path / "checkpoints" / "3")
  with checkpoints.manager(tmp_path, keep=10) as mngr, caplog.at_level(logging.WARNING, "radjax"):
    state, meta, epoch = checkpoints.restore_for_resume(mngr, make_state(0), tmp_path)
    assert epoch == 2 and meta == meta_of(2, *THREE[2])
    assert_trees_equal(state, make_state(2))
    aside = tmp_path / "damaged_checkpoints" / "3"
    assert snapshot(aside) == damaged_files
    assert not (tmp_path / "checkpoints" / "3").exists()
    assert list(mngr.all_steps()) == [1, 2]
    [record] = [r for r in caplog.records if r.name == "radjax"]
    assert str((tmp_path / "checkpoints" / "3").absolute()) in record.getMessage()
    assert str(aside.absolute()) in record.getMessage()
    checkpoints.save(mngr, 3, make_state(33), meta_of(3, 0.9, 0.2))  # the epoch trains again
  with checkpoints.manager(tmp_path, keep=10) as mngr:
    assert list(mngr.all_steps()) == [1, 2, 3]
    state, _, epoch = checkpoints.restore_for_resume(mngr, make_state(0), tmp_path)
    assert epoch == 3
    assert_trees_equal(state, make_state(33))
  damage(tmp_path, 3, "delete")  # damaged again: set aside under another name
  with checkpoints.manager(tmp_path, keep=10) as mngr:
    assert checkpoints.restore_for_resume(mngr, make_state(0), tmp_path)[2] == 2
  assert sorted(p.name for p in (tmp_path / "damaged_checkpoints").iterdir()) == ["3", "3.2"]
  assert snapshot(tmp_path / "damaged_checkpoints" / "3") == damaged_files


def test_restore_for_resume_without_intact_checkpoints(tmp_path):
  with checkpoints.manager(tmp_path, keep=3) as mngr:
    assert checkpoints.restore_for_resume(mngr, make_state(0), tmp_path) is None
  save_epochs(tmp_path, {1: (0.6, 0.5), 2: (0.7, 0.4)})
  damage(tmp_path, 1, "truncate")
  (tmp_path / "checkpoints" / "2" / "meta" / "metadata").write_text("{not json")
  with checkpoints.manager(tmp_path, keep=3) as mngr:
    assert checkpoints.restore_for_resume(mngr, make_state(0), tmp_path) is None
    assert list(mngr.all_steps()) == []
    checkpoints.save(mngr, 1, make_state(1), meta_of(1, 0.5, 0.5))
  assert sorted(p.name for p in (tmp_path / "damaged_checkpoints").iterdir()) == ["1", "2"]


def test_restore_into_another_model_is_not_damage(tmp_path):
  save_epochs(tmp_path, {1: (0.6, 0.5)})
  other = make_state(0).replace(params={"conv": {"kernel": jnp.zeros((3, 3))}})
  with checkpoints.manager(tmp_path, keep=3) as mngr:
    with pytest.raises(UserError, match="checkpoint of epoch 1 does not fit the model"):
      checkpoints.restore_for_resume(mngr, other, tmp_path)
  assert (tmp_path / "checkpoints" / "1").is_dir()
  assert not (tmp_path / "damaged_checkpoints").exists()


def test_best_is_highest_auc_then_lowest_loss(tmp_path):
  # epoch 3 ties epoch 2 on AUC and wins on loss; the latest (4) and the first (1) are worse.
  save_epochs(tmp_path, {1: (0.7, 0.5), 2: (0.9, 0.6), 3: (0.9, 0.4), 4: (0.8, 0.1)})
  with checkpoints.manager(tmp_path, keep=10) as mngr:
    assert checkpoints.choose(mngr, "best") == 3
    assert checkpoints.choose(mngr, "latest") == 4
  assert checkpoints.load_for_inference(tmp_path)[2] == 3


def test_best_with_unreadable_metadata_is_damaged(tmp_path):
  save_epochs(tmp_path, THREE)
  (tmp_path / "checkpoints" / "1" / "meta" / "metadata").write_text("{truncated")
  with pytest.raises(UserError, match=r"/1: checkpoint of epoch 1 is damaged \(JSONDecodeError: "
                     r".*\); intact checkpoints: epochs 2, 3 \(use --checkpoint N\)$"):
    checkpoints.load_for_inference(tmp_path, "best")
  assert checkpoints.load_for_inference(tmp_path, "latest")[2] == 3


def test_retention_keeps_the_best_and_damaged_checkpoints_across_runs(tmp_path):
  # Orbax stores no metrics itself here: a new manager must read them from `meta`, or BestN would
  # forget the best checkpoint of the earlier run and LatestN delete it.
  save_epochs(tmp_path, {1: (0.9, 0.5), 2: (0.6, 0.4), 3: (0.7, 0.3)}, keep=1)
  with checkpoints.manager(tmp_path, keep=1) as mngr:
    assert list(mngr.all_steps()) == [1, 3]
    checkpoints.save(mngr, 4, make_state(4), meta_of(4, 0.8, 0.2))
    assert list(mngr.all_steps()) == [1, 4]
  (tmp_path / "checkpoints" / "1" / "meta" / "metadata").write_text("")  # unrankable now
  with checkpoints.manager(tmp_path, keep=1) as mngr:
    assert checkpoints.restore_for_resume(mngr, make_state(0), tmp_path)[2] == 4
    checkpoints.save(mngr, 5, make_state(5), meta_of(5, 0.7, 0.2))
    checkpoints.save(mngr, 6, make_state(6), meta_of(6, 0.6, 0.2))
    assert list(mngr.all_steps()) == [1, 4, 6]  # 1: damaged, never deleted; 4: best; 6: latest
  assert (tmp_path / "checkpoints" / "1" / "model").is_dir()


HOLDER = """
import sys, time
from radjax.training import workdir
with workdir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_lock_refuses_a_second_run_and_names_its_pid(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError) as raised:
      with workdir.lock(tmp_path):
        pass
    assert str(raised.value) == (
        f"{tmp_path}: locked by pid {holder.pid} (another radjax train is running on this "
        "workdir); wait for it or use another --workdir")
  finally:
    holder.kill()
    holder.wait()
  with workdir.lock(tmp_path):  # the kernel dropped the killed holder's flock
    assert (tmp_path / "train.lock").read_text() == f"{os.getpid()}\n"
  assert (tmp_path / "train.lock").read_text() == ""


def test_lock_file_of_a_killed_run_does_not_block(tmp_path):
  pid = dead_pid()
  (tmp_path / "train.lock").write_text(f"{pid}\n")
  with workdir.lock(tmp_path):
    assert (tmp_path / "train.lock").read_text() == f"{os.getpid()}\n"
  # Locked by someone who has not written its pid yet: the message must not name the stale one.
  (tmp_path / "train.lock").write_text(f"{pid}\n")
  with open(tmp_path / "train.lock") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    with pytest.raises(UserError, match="locked by another process") as raised:
      with workdir.lock(tmp_path):
        pass
  assert str(pid) not in str(raised.value)


def test_prepare_creates_the_workdir(tmp_path):
  path = tmp_path / "a" / "b"
  assert workdir.prepare(path) == path and path.is_dir()
  assert list(path.iterdir()) == []  # the probe is gone
  assert workdir.prepare(path) == path  # and again, existing


def test_prepare_names_a_file_in_the_way(tmp_path):
  file = tmp_path / "file"
  file.write_text("x")
  with pytest.raises(UserError, match=f"^{file}: is a file, not a directory"):
    workdir.prepare(file)
  with pytest.raises(UserError, match=f"^{file / 'run' / 'x'}: {file} is a file, not a directory"):
    workdir.prepare(file / "run" / "x")


def test_prepare_read_only(tmp_path, monkeypatch):
  # Tests run as root, which chmod does not stop: fail the probe as a read-only mount would.
  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")

  monkeypatch.setattr(workdir, "open", read_only, raising=False)
  with pytest.raises(UserError, match=f"^{tmp_path}: cannot write in the workdir "
                     r"\(Read-only file system\); choose a --workdir you can write to$"):
    workdir.prepare(tmp_path)


def test_best_of_a_full_tie_is_the_later_checkpoint(tmp_path):
  # Epochs 1 and 3 tie on AUC and on loss: the later one, trained longer, is "best".
  save_epochs(tmp_path, {1: (0.9, 0.4), 2: (0.8, 0.1), 3: (0.9, 0.4)})
  with checkpoints.manager(tmp_path, keep=10) as mngr:
    assert checkpoints.choose(mngr, "best") == 3
