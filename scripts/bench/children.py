"""Child processes. XLA reads XLA_FLAGS once, when JAX starts its backend, and JAX_PLATFORMS picks
the backends a process sees: a setting of either, or a cold compilation cache, can only be
measured in a fresh process. A child is scripts/benchmark.py run again (with a hidden flag naming
its part's work, or as an ordinary run), and its records come back as the JSON lines it prints;
the parent emits them as its own, so they reach the table and `--jsonl` like any other. Both ends
are here: `run` starts a child, `serve` is what a child started with a hidden flag does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench import SCRIPT, records


def run(flags: list[str], env: dict | None = None, check: bool = False):
  """The benchmark script run with `flags` and the environment changed by `env`: the finished
  process, and the records it printed."""
  child = subprocess.run([sys.executable, str(SCRIPT), *flags],
                         env={**os.environ, **(env or {})}, capture_output=True, text=True,
                         check=check)
  return child, [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]


def failure(child) -> str:
  """A failed child in one line: its exit status and the end of what it said (XLA refuses an
  unknown flag at start-up, for one)."""
  return f"child exited {child.returncode}: {child.stderr.strip()[-300:]}"


def step_args(args) -> list[str]:
  """The flags a child process that times the step at --variants-at needs from this one."""
  return ["--variants-at", args.variants_at, "--image-size", str(args.image_size),
          "--warmup", str(args.warmup), "--steps", str(args.steps), "--repeats", str(args.repeats)]


def serve(args) -> bool:
  """The child's end: the work a hidden flag (`--xla-flags-child`, `--compile-once`,
  `--onednn-child`) names, done; False for an ordinary run. (The parts' modules are imported
  here, as they are used: they start children through this module.)"""
  if args.xla_flags_child:
    import radjax  # noqa: F401
    # Exactly the setting under test, without radjax' defaults: XLA reads XLA_FLAGS when JAX
    # starts its backend, after this.
    os.environ["XLA_FLAGS"] = records.USER_XLA_FLAGS
    from bench import xla_flags
    xla_flags.xla_flags_child(args.xla_flags_child, args)
  elif args.compile_once:
    from bench import compile_cache
    compile_cache.compile_once(*args.compile_once, args)
  elif args.onednn_child:
    import radjax  # noqa: F401  (its XLA defaults, as in any run)
    from bench import onednn
    onednn.onednn_child(args.onednn_child, args)
  else:
    return False
  return True
