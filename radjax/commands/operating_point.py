"""A run's stored operating point (`WORKDIR/operating_point.json`): chosen by `radjax evaluate` on
one checkpoint's validation logits, applied by `predict` and by `evaluate` on other splits to
that checkpoint only. JSON and paths only, so `predict` starts without evaluate's imports."""

from __future__ import annotations

import json
import pathlib

OPERATING_POINT = "operating_point.json"


def read_operating_point(workdir) -> dict | None:
  path = pathlib.Path(workdir) / OPERATING_POINT
  return json.loads(path.read_text()) if path.is_file() else None


def point_mismatch(point: dict, epoch: int, meta: dict) -> str | None:
  """Why a stored operating point does not belong to the checkpoint of `epoch` of the run whose
  metadata is `meta` (None when it does): a point is chosen on one checkpoint's logits of one
  validation set, and means nothing for another model or other data. Points stored before the
  data were recorded are matched on the epoch alone."""
  if point.get("epoch") != epoch:
    return (f"{OPERATING_POINT} was chosen for the checkpoint of epoch {point.get('epoch')}, not "
            f"this one (epoch {epoch})")
  stored = point.get("data_dir")
  if stored and meta.get("data_dir") and pathlib.Path(stored) != pathlib.Path(meta["data_dir"]):
    return f"{OPERATING_POINT} was chosen on {stored}, not on the run's own data"
  return None


def bound_operating_point(workdir, epoch: int, meta: dict) -> tuple[dict | None, str | None]:
  """(the workdir's operating point if it belongs to this checkpoint, else None; why not)."""
  point = read_operating_point(workdir)
  if point is None:
    return None, None
  why = point_mismatch(point, epoch, meta)
  return (None, why) if why else (point, None)


def store_point(point: dict, workdir, out_dir, own_data: bool) -> pathlib.Path | None:
  """Where a newly chosen operating point goes: the workdir when the run's own validation data
  were evaluated into it; `--out` when given (the workdir is never touched then); nowhere when
  other data were evaluated into the workdir (predict would decide at a threshold chosen on them)."""
  target = pathlib.Path(out_dir) if out_dir else (pathlib.Path(workdir) if own_data else None)
  if target is not None:
    (target / OPERATING_POINT).write_text(json.dumps(point, indent=2))
    return target / OPERATING_POINT
  return None


