"""What compiling costs a user: the batch-5 float32 step's compile time in two fresh processes
that share one persistent compilation cache, cold (an empty cache: a first `radjax train` on a
machine) and warm (every later one). In-process figures cannot show this: JAX's in-memory caches
would serve the second compile.
"""

from __future__ import annotations

import json
import tempfile

from bench import children
from bench.records import emit
from bench.step import compiled_radjax_step


def bench_compile_cache(device_kind: str, args) -> None:
  """The batch-5 float32 step's compile time in two fresh processes sharing one persistent
  compilation cache: cold (empty cache), then warm (what a second `radjax train` pays)."""
  with tempfile.TemporaryDirectory() as cache:
    seconds = []
    for _ in ("cold", "warm"):
      _, records = children.run(["--compile-once", device_kind, cache,
                                 "--image-size", str(args.image_size)], check=True)
      seconds.append(records[-1]["compile_s"])
  emit(part="compile_cache", impl="radjax", device=device_kind, batch=5, dtype="float32",
       cold_s=seconds[0], warm_s=seconds[1])


def compile_once(device_kind: str, cache: str, args) -> None:
  """The child (`--compile-once DEVICE CACHE`): compiles the step with CACHE as the persistent
  cache, every compile stored, and prints its compile time as a JSON line."""
  import jax

  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  compile_s = compiled_radjax_step(device_kind, 5, "float32", args)[5]
  print(json.dumps({"compile_s": compile_s}))
