"""`radjax export`: a trained run's checkpoint as a portable folder (`radjax.exported` loads it).

The inference function (weights, preprocessed batch) -> logits is lowered once with `jax.export`
for CPU and CUDA together, with a symbolic batch size and BatchNorm in inference mode; the
weights travel beside it as arrays, and `radjax.json` holds everything needed to feed it.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np

from radjax import exported
from radjax.errors import UserError

PLATFORMS = ("cpu", "cuda")
PREPROCESSING = ("image_size", "resize", "resize_method", "value_range", "dicom_voi",
                 "crop_borders")
# Custom calls jax.export guarantees across versions (its stable list, jax/_src/export): others
# would tie the file to this jaxlib. "shape_assertion" checks the symbolic batch at call time.
ALLOWED_CUSTOM_CALLS = {"shape_assertion"}


def _operating_point(workdir, trained) -> dict:
  """The decision the run's `predict` would use: its stored operating point(s) when they belong
  to this checkpoint, else 0.5 (multiclass: the most probable class)."""
  from radjax.training import decisions

  threshold, cut, source = decisions.run_decision(workdir, trained)
  if trained.task == "multiclass":
    return {"rule": source}
  return {"threshold": threshold, "threshold_logit": cut, "source": source}


def export_workdir(workdir, out, which: str = "best") -> dict:
  """Writes the export folder `out`; returns {"path", "bytes", "epoch", "platforms"}."""
  import re

  import jax
  import jax.numpy as jnp
  from jax import export

  import radjax
  from radjax.training import run as run_lib

  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise UserError(f"--out {out}: exists and is not an empty folder; export into a new one")
  if not out.parent.is_dir():
    raise UserError(f"--out {out}: no such folder {out.parent}/")
  trained = run_lib.load(workdir, which)
  variables = jax.device_get(trained.variables)
  model = trained.model

  def infer(variables, images):  # inference mode: BatchNorm's averages, no dropout
    return model.apply(variables, images, train=False)

  size = trained.config.image_size
  batch, = export.symbolic_shape("batch")
  program = export.export(jax.jit(infer), platforms=PLATFORMS)(
      jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), variables),
      jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32))
  calls = set(re.findall(r'stablehlo.custom_call @(\w+)', program.mlir_module()))
  if calls - ALLOWED_CUSTOM_CALLS:
    raise UserError(f"{workdir}: the model lowers to custom calls outside jax.export's stable "
                    f"list ({', '.join(sorted(calls - ALLOWED_CUSTOM_CALLS))}); not exported")
  partial = out.with_name(out.name + ".partial")
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir()
  np.savez(partial / exported.WEIGHTS, **exported.flatten(variables))
  (partial / exported.PROGRAM).write_bytes(program.serialize())
  metadata = {
      "format": exported.FORMAT, "radjax_version": radjax.__version__,
      "jax_version": jax.__version__, "platforms": list(PLATFORMS),
      "task": trained.task, "class_names": trained.class_names,
      "preprocessing": {k: trained.config[k] for k in PREPROCESSING},
      "input": {"shape": ["batch", size, size, 3], "dtype": "float32",
                "range": "[-1, 1]" if trained.config.value_range == "inception" else "[0, 1]"},
      "output": {"binary": "(batch,) logit of the second class",
                 "multiclass": "(batch, classes) logits (softmax: probabilities)",
                 "multilabel": "(batch, labels) logits (a sigmoid each)"}[trained.task],
      "operating_point": _operating_point(workdir, trained),
      "checkpoint": {"workdir": str(pathlib.Path(workdir).resolve()), "which": which,
                     "epoch": trained.epoch, "metrics": trained.meta.get("metrics", {})},
      "implementations": run_lib.implementations(trained.config),
      "weights_sha256": exported.sha256(partial / exported.WEIGHTS),
      "program_sha256": exported.sha256(partial / exported.PROGRAM)}
  (partial / exported.METADATA).write_text(json.dumps(metadata, indent=2))
  if out.exists():
    out.rmdir()
  partial.rename(out)
  return {"path": str(out), "bytes": sum(f.stat().st_size for f in out.iterdir()),
          "epoch": trained.epoch, "platforms": list(PLATFORMS)}
