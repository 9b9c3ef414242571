"""What a run decides at: its stored operating point (`WORKDIR/operating_point.json`), chosen by
`radjax evaluate` on one checkpoint's validation logits and applied by `predict`, `stress`,
`export` and `serve` (and `evaluate` on other splits) to that checkpoint only; else a
`--threshold`; else probability 0.5. JSON and paths only, so `predict` starts without evaluate's
imports."""

from __future__ import annotations

import json
import logging
import pathlib

from radjax.errors import UserError
from radjax.metrics.probabilities import logit

log = logging.getLogger("radjax")

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


def label_thresholds(workdir, class_names, threshold: float | None = None, meta: dict | None = None
                     ) -> tuple[dict[str, float], dict[str, float], str]:
  """A multilabel run's (probability threshold per label, the same as logits, where they came
  from): `--threshold` for every label, else the run's operating points (each label's, chosen on
  validation by `radjax evaluate`) when they belong to the checkpoint whose metadata is `meta`,
  else 0.5."""
  if threshold is not None:
    cut = checked_threshold(threshold)
    return dict.fromkeys(class_names, cut), dict.fromkeys(class_names, logit(cut)), "--threshold"
  point, why = _stored_point(workdir, meta)
  if point is not None and point.get("task") == "multilabel":
    chosen = {n: point["labels"].get(n) or {"threshold": 0.5, "threshold_logit": 0.0}
              for n in class_names}
    return ({n: c["threshold"] for n, c in chosen.items()},
            {n: c["threshold_logit"] for n, c in chosen.items()},
            f"{pathlib.Path(workdir) / OPERATING_POINT} ({point['rule']}, each label's own)")
  return (dict.fromkeys(class_names, 0.5), dict.fromkeys(class_names, 0.0),
          f"default: {why}" if why else
          "default (no operating points: run radjax evaluate to choose them on VAL)")


def _stored_point(workdir, meta: dict | None) -> tuple[dict | None, str | None]:
  """The workdir's operating point if it belongs to the checkpoint of `meta` (else None, and why
  not, as a warning)."""
  if meta is None:
    return read_operating_point(workdir), None
  point, why = bound_operating_point(workdir, meta["epoch"], meta)
  if why:
    why += (f"; deciding at probability 0.5 (run radjax evaluate with this --checkpoint to "
            "choose one for it)")
    log.warning("%s", why)
  return point, why


def checked_threshold(threshold: float) -> float:
  if not 0 < threshold < 1:
    raise UserError(f"--threshold {threshold}: expected a probability strictly between 0 and 1")
  return threshold


def decision_threshold(workdir, threshold: float | None = None, meta: dict | None = None
                       ) -> tuple[float, float, str]:
  """(probability threshold, the same as a logit, where it came from): `--threshold`, else the
  run's operating point (chosen on validation by `radjax evaluate`) when it belongs to the
  checkpoint whose metadata is `meta`, else 0.5. Decisions compare logits: between saturated
  scores (probabilities that round to 1) only the stored logit decides as evaluate did."""
  if threshold is not None:
    return checked_threshold(threshold), logit(checked_threshold(threshold)), "--threshold"
  point, why = _stored_point(workdir, meta)
  if point is not None and point.get("task", "binary") == "binary":
    return (point["threshold"], point["threshold_logit"],
            f"{pathlib.Path(workdir) / OPERATING_POINT} ({point['rule']})")
  return 0.5, 0.0, (f"default: {why}" if why else
                    "default (no operating point: run radjax evaluate to choose one on VAL)")


def run_decision(workdir, trained) -> tuple[object, object, str]:
  """(threshold(s), the same as logit(s), where they came from) that `radjax predict` applies to
  a loaded run (`run.load`) without `--threshold`: binary, one each; multilabel, a dict of each
  label's; multiclass, (None, None, "the most probable class")."""
  meta = {**trained.meta, "epoch": trained.epoch}
  if trained.task == "binary":
    return decision_threshold(workdir, None, meta)
  if trained.task == "multilabel":
    return label_thresholds(workdir, trained.class_names, None, meta)
  return None, None, "the most probable class"
