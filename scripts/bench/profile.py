"""Where a train step's time goes: the step traced with `jax.profiler`, each traced op mapped back
to the JAX source path XLA kept for its HLO instruction, and grouped by what it computes (forward
or backward; conv matmul, conv patches, batchnorm, pooling, ...). The step's figure alone cannot
say which of these a change should target; this table does.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

from bench.records import emit
from bench.step import compiled_radjax_step


def _op_sources(hlo_text: str) -> dict[str, tuple[str, bool]]:
  """HLO instruction name -> (the JAX source path XLA kept for it, whether it multiplies matrices).

  A fusion's path is its root's, and a fusion that contains a dot or a convolution counts as a
  matrix product whatever its root. Ops XLA made itself (layout copies, the index arrays of
  max-pool gradients) have no path: they inherit their users', so they count with what needs them.
  """
  import re

  computations, current = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"(?:ENTRY )?%([\w.\-]+) .*\{$", line)
    if header:
      current = computations.setdefault(header.group(1), [])
    elif current is not None:
      current.append(line)
  has_matmul = {name: any(re.search(r"\b(dot|convolution)\(", l) for l in lines)
                for name, lines in computations.items()}
  sources, users = {}, {}
  for lines in computations.values():
    for line in lines:
      match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?\b([\w-]+)\((.*)", line)
      if not match or match.group(2) in ("while", "call", "conditional"):  # they contain others
        continue
      name, op, rest = match.groups()
      path = re.search(r'op_name="([^"]*)"', line)
      called = re.search(r"calls=%([\w.\-]+)", line)
      library = op == "custom-call" and re.search(r'custom_call_target="__(cudnn\$conv|cublas)', line)
      sources[name] = (path.group(1) if path else "",
                       op in ("dot", "convolution") or bool(library)
                       or bool(called and has_matmul.get(called.group(1))))
      for operand in re.findall(r"%([\w.\-]+)", rest.split("metadata=")[0]):
        users.setdefault(operand, []).append(name)
  for _ in range(8):  # paths flow back from users, a few hops (copy -> fusion -> ...)
    for name, (path, matmul) in sources.items():
      if not path:
        inherited = [sources[u][0] for u in users.get(name, []) if u in sources and sources[u][0]]
        if inherited:
          sources[name] = (inherited[0], matmul)
  return sources


def _profile_group(op_name: str, matmul: bool) -> str:
  """What an op computes: `transpose(jvp(...))` in its path marks the backward pass."""
  if not op_name:
    return "unattributed"
  if "transpose(" in op_name:
    direction = "backward"
  elif "jvp(" in op_name:
    direction = "forward"
  else:
    return "optimizer and metrics"
  last = op_name.rsplit("/", 1)[-1]
  if "/backbone/" not in op_name:
    what = "head and loss"
  elif matmul:
    what = "conv matmul"
  elif "/conv/" in op_name:
    what = "conv patches (slice, pad, concat)"
  elif "/bn/" in op_name:
    what = "batchnorm"
  elif last.startswith(("reduce_window", "select_and_scatter")) or "max_pool" in op_name:
    what = "pooling"
  elif last in ("concatenate", "split"):
    what = "block concat / split"
  elif last in ("max", "select_n", "gt"):
    what = "relu"
  else:
    what = "other backbone (avg-pool division, ...)"
  return f"{direction}: {what}"


def profile_radjax_step(device_kind: str, batch: int, dtype: str, args) -> None:
  """Where a train step's time goes: traced XLA ops grouped by what they compute.

  On CPU, op times are summed over the threads that ran them (two ops can run at once), so the
  shares are of op time; the step's wall time is given beside them. On a GPU, the ops are the
  kernels of its stream (one at a time), mapped to HLO ops by their "hlo_op" stat: op time well
  below the wall time means the GPU waited (kernel launches, the host). Tracing slows a GPU step
  several-fold (238 vs 61 ms on an H200): compare shares, not the traced wall time.
  """
  import collections

  import jax

  devices, compiled, state, data, key, _, implementations = compiled_radjax_step(
      device_kind, batch, dtype, args)
  sources = _op_sources(compiled.as_text())
  for _ in range(args.warmup):
    state, metrics = compiled(state, data, key)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(args.steps):
        state, metrics = compiled(state, data, key)
      jax.block_until_ready(state)
    wall_ms = (time.perf_counter() - start) / args.steps * 1e3
    trace = jax.profiler.ProfileData.from_file(
        str(next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))))
  planes = list(trace.planes)
  gpu_planes = [pl for pl in planes if pl.name.startswith("/device:GPU")]
  if device_kind == "gpu" and gpu_planes:
    # The device's timelines: its streams' kernels (an "XLA Ops" line, where a version has one,
    # holds the same work again by HLO op; "XLA Modules" the whole program).
    lines = [line for pl in gpu_planes for line in pl.lines if line.name == "XLA Ops"] or [
        line for pl in gpu_planes for line in pl.lines if line.name != "XLA Modules"]
  else:
    lines = [line for pl in planes for line in pl.lines]
  on_device = device_kind == "gpu" and bool(gpu_planes)  # else host threads: not all are ops
  groups, ops, unmatched = collections.Counter(), collections.Counter(), collections.Counter()
  unmatched_stats, events = set(), 0
  for line in lines:
    for event in line.events:
      # A kernel or thunk names its HLO instruction in its "hlo_op" stat (GPU kernels are named
      # by the library: cuDNN, cuBLAS); CPU ops are also named by it.
      stats = dict(event.stats)
      name = stats.get("hlo_op", event.name)
      ms = event.duration_ns / 1e6 / args.steps
      if name not in sources:
        if on_device:  # a GPU kernel no HLO op claims: kept by name, so no time goes missing
          unmatched[event.name[:80]] += ms
          unmatched_stats.update(stats)
        continue
      groups[_profile_group(*sources[name])] += ms
      ops[name] += ms
      events += 1
  total = sum(groups.values())
  emit(part="profile", impl="radjax", device=device_kind, batch=batch, dtype=dtype,
       implementations=implementations, wall_ms_per_step_traced=wall_ms, op_ms_per_step=total,
       ops_per_step=events / args.steps,
       unmatched_ms_per_step=sum(unmatched.values()),
       unmatched_events_per_step=sum(1 for line in lines for e in line.events
                                     if dict(e.stats).get("hlo_op", e.name) not in sources)
       / args.steps,
       top_unmatched={n: round(ms, 3) for n, ms in unmatched.most_common(10)},
       unmatched_stat_names=sorted(unmatched_stats)[:20],
       groups={g: round(ms, 2) for g, ms in groups.most_common()},
       top_ops={f"{n} ({'/'.join(sources[n][0].split('/')[-2:]) or '?'})": round(ms, 3)
                for n, ms in ops.most_common(12)},
       timelines=sorted({f"{pl.name}:{line.name}" for pl in (gpu_planes or planes)
                         for line in pl.lines})[:20])
