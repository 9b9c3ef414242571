"""The training workdir: created and checked writable (`prepare`); one run at a time (`lock`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import time

from radjax.errors import UserError

LOCK_NAME = "train.lock"


def _file_in_the_way(path: pathlib.Path) -> pathlib.Path | None:
  """`path` or the nearest of its parents that exists, when that is not a directory."""
  for candidate in (path, *path.parents):
    try:
      if candidate.exists():
        return None if candidate.is_dir() else candidate
    except OSError:  # unreadable: let mkdir say why
      return None
  return None


def prepare(path) -> pathlib.Path:
  """Creates the workdir (and its parents) and checks that a file can be written in it."""
  path = pathlib.Path(path)
  blocker = _file_in_the_way(path)
  if blocker == path:
    raise UserError(f"{path}: is a file, not a directory; choose another --workdir")
  if blocker is not None:
    raise UserError(f"{path}: {blocker} is a file, not a directory; choose another --workdir")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"{path}: cannot create the workdir ({e.strerror}); choose a --workdir you "
                    "can write to") from e
  probe = path / f".radjax-probe-{os.getpid()}"
  try:
    with open(probe, "w") as f:
      f.write("probe\n")
    probe.unlink()
  except OSError as e:
    raise UserError(f"{path}: cannot write in the workdir ({e.strerror}); choose a --workdir you "
                    "can write to") from e
  return path


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def _holder(fd: int, patience_s: float = 1.0) -> int | None:
  """The live pid written in the lock file, or None.

  The holder writes its pid just after taking the lock, so the file may still hold the pid of a
  killed run for a moment: wait a little for a live one rather than name a stale pid.
  """
  deadline = time.monotonic() + patience_s
  while True:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    if text.isdigit() and _running(int(text)):
      return int(text)
    if time.monotonic() > deadline:
      return None
    time.sleep(0.05)


@contextlib.contextmanager
def lock(path):
  """Holds an exclusive lock on `path/train.lock` for a training run; a UserError if it is taken.

  The lock is a `flock`, which the kernel drops when its holder dies: a lock file left by a killed
  run does not block. The file stays (deleting it would let two runs lock different files).
  """
  path = pathlib.Path(path)
  file = path / LOCK_NAME
  try:
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UserError(f"{file}: cannot create the lock file ({e.strerror})") from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise UserError(f"{file}: cannot lock ({e.strerror})") from e
      pid = _holder(fd)
      who = f"pid {pid}" if pid is not None else "another process"
      raise UserError(f"{path}: locked by {who} (another radjax train is running on this "
                      "workdir); wait for it or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
      yield path
    finally:
      os.ftruncate(fd, 0)  # before unlocking: the file never names a finished run
  finally:
    os.close(fd)  # releases the flock
