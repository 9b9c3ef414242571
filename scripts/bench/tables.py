"""The markdown tables a reader compares by, printed from the records (this run's, or stored JSON
lines with `--table`): the train step of radjax, its variants and peers with "radjax / this"
ratios, the input pipeline, compile and predict times, the end-to-end epochs with their
overheads over the bare step, profiles, and the oneDNN, XLA-flags and GPU-against-CPU studies.
A ratio sets two records against each other only when they come from one file and one machine:
another file may be another card, another day, another load.
"""

from __future__ import annotations

import statistics

from bench.onednn import ONEDNN_SCALE_FACTOR
from bench.records import RESULTS, SOURCE


def _label(r: dict) -> str:
  if r.get("compile_mode"):
    return f"{r['impl']} ({r['compile_mode']})"
  settings = [r["variant"]] if r["impl"] == "radjax" and r.get("variant") else []
  settings += [f"XLA_FLAGS={r['xla_flags']}"] if r.get("xla_flags") else []
  return f"{r['impl']} ({'; '.join(settings)})" if settings else r["impl"]


def table() -> str:
  steps = [r for r in RESULTS if r["part"] == "train_step" and "skipped" not in r
           and "onednn" not in r and "study" not in r]
  base = [r for r in steps if r["impl"] == "radjax" and not r.get("variant")]

  def ours_at(device, batch, dtype, xla_flags="", source=None):
    # Only a record of the same machine in the same file (`--table`; one run: all of them) is
    # a fair reference: another file may be another card, another day, another load.
    return next((o for o in base if o["device"] == device and o["batch"] == batch
                 and o["dtype"] == dtype and o.get("xla_flags", "") == xla_flags
                 and o.get(SOURCE) == source), None)

  lines = ["| part | impl | device | batch | dtype | ms/step | images/s | compile s | peak GiB "
           "| radjax / this |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in steps:
    # Peers and variants against radjax at the same batch and dtype (float32 if it has none).
    ours = (ours_at(r["device"], r["batch"], r["dtype"], source=r.get(SOURCE))
            or ours_at(r["device"], r["batch"], "float32", source=r.get(SOURCE)))
    ratio = f"{ours['images_per_s'] / r['images_per_s']:.2f}x" if ours and r is not ours else ""
    compile_s = r.get("compile_s", r.get("first_step_s"))
    peak = f"{r['peak_memory_gb']:.1f}" if r.get("peak_memory_gb") is not None else ""
    if r.get("peak_memory_kind") == "host RSS":
      peak += " (RSS)"
    lines.append(f"| train step | {_label(r)} | {r['device']} | {r['batch']} | {r['dtype']} | "
                 f"{r['ms_per_step']:.1f} | {r['images_per_s']:.1f} | {compile_s:.1f} | {peak} "
                 f"| {ratio} |")
  for r in base:  # against the fastest PyTorch row (eager or compiled) at its device and batch
    torch_rows = [t for t in steps if t["impl"].startswith("torch") and t["device"] == r["device"]
                  and t["batch"] == r["batch"] and t.get(SOURCE) == r.get(SOURCE)]
    if torch_rows and not r.get("xla_flags"):
      fastest = max(torch_rows, key=lambda t: t["images_per_s"])
      lines.append(f"| radjax {r['dtype']} / fastest PyTorch ({_label(fastest)}, {fastest['dtype']}) "
                   f"| radjax | {r['device']} | {r['batch']} | {r['dtype']} | | | | | "
                   f"**{r['images_per_s'] / fastest['images_per_s']:.2f}x** |")
  for r in base:
    if r["device"] == "gpu" and not r.get("xla_flags"):
      cpu = ours_at("cpu", r["batch"], r["dtype"], source=r.get(SOURCE))
      if cpu:
        lines.append(f"| GPU/CPU | radjax | gpu vs cpu | {r['batch']} | {r['dtype']} | | "
                     f"{r['images_per_s'] / cpu['images_per_s']:.1f}x | | | |")
  pipes = {(r.get(SOURCE), r["impl"]): r for r in RESULTS
           if r["part"] == "pipeline" and "skipped" not in r}
  for (source, impl), r in pipes.items():
    ours = pipes.get((source, "radjax"))
    ratio = f"{ours['images_per_s'] / r['images_per_s']:.2f}x" if ours and r is not ours else ""
    lines.append(f"| input pipeline | {impl} | cpu | {r['batch']} | float32 | | "
                 f"{r['images_per_s']:.1f} | | | {ratio} |")
  for r in RESULTS:
    if r["part"] == "compile_cache" and "skipped" not in r:
      lines.append(f"| first-step compile, fresh process: cold / warm cache | radjax | {r['device']} "
                   f"| 5 | float32 | | | {r['cold_s']:.1f} / {r['warm_s']:.1f} | | |")
  for r in RESULTS:
    if r["part"] == "predict_cli" and "skipped" not in r:
      lines.append(f"| `radjax predict` of 1 file, fresh process: cold / warm cache (s) | radjax "
                   f"| {r['device']} | 1 | float32 | | | {r['cold_s']:.1f} / {r['warm_s']:.1f} | | |")
  for r in RESULTS:
    if r["part"] != "end_to_end" or "skipped" in r:
      continue
    flags = f", XLA_FLAGS={r['xla_flags']}" if r.get("xla_flags") else ""
    lines += ["", f"hello_world end to end ({r['data']}, augment on {r['augment_on']}, "
              f"{r.get('device', 'default')} backend{flags}), per epoch:", "",
              "| epoch | epoch s | train s | precise BN s | validation s | train images/s "
              "| train s / (steps x step) | epoch s / (steps x step + validation s) |",
              "|---|---|---|---|---|---|---|---|"]
    step = ours_at(r.get("device"), r.get("batch"), "float32", r.get("xla_flags", ""),
                   r.get(SOURCE))
    for i, epoch_s in enumerate(r["epoch_s"]):
      train_s = r.get("train_s", [None] * len(r["epoch_s"]))[i]
      pure = (r["steps_per_epoch"] * step["ms_per_step"] / 1e3
              if step and r.get("steps_per_epoch") else None)
      over = f"{train_s / pure:.2f}x" if pure and train_s else ""
      whole = f"{epoch_s / (pure + r['val_s'][i]):.2f}x" if pure and "val_s" in r else ""
      phases = [f"{r[k][i]:.3f}" if k in r else "" for k in ("train_s", "precise_bn_s", "val_s")]
      lines.append(f"| {i + 1} | {epoch_s:.3f} | {' | '.join(phases)} | "
                   f"{r['train_images_per_s'][i]:.1f} | {over} | {whole} |")
  for r in RESULTS:
    if r["part"] == "profile" and "skipped" not in r:
      impl = ", ".join(f"{k}={v}" for k, v in r.get("implementations", {}).items())
      lines += ["", f"Where a {r['device']} train step's time goes (batch {r['batch']}, "
                f"{r.get('dtype', 'float32')}, {impl}; {r['wall_ms_per_step_traced']:.1f} ms wall "
                f"while tracing, {r['op_ms_per_step']:.1f} ms of ops):", "",
                "| ops | ms/step | share |", "|---|---|---|"]
      lines += [f"| {g} | {ms:.2f} | {100 * ms / max(r['op_ms_per_step'], 1e-9):.1f}% |"
                for g, ms in r["groups"].items()]
      if r.get("unmatched_ms_per_step"):
        lines.append(f"| (not in the table: kernels no HLO op claims) | "
                     f"{r['unmatched_ms_per_step']:.2f} | |")
  lines += _onednn_table() + _xla_flags_table() + _gpu_vs_cpu_table()
  if len(lines) > 2 and not lines[2].startswith("|"):  # other tables, but no plain step row
    lines = lines[2:]
    while lines and not lines[0]:
      lines.pop(0)
  skipped = [f"{r['part']} {r.get('impl', '')}: {r['skipped']}" for r in RESULTS if "skipped" in r]
  return "\n".join(lines + ([""] + [f"- skipped: {s}" for s in skipped] if skipped else []))


def _onednn_table() -> list[str]:
  """The oneDNN part's rows: each conv_impl without and with the recipe, against Keras of the
  same file and machine at the same batch, and whether the recipe kept the step's numbers."""
  ours = [r for r in RESULTS if r["part"] == "train_step" and "onednn" in r and "skipped" not in r]
  if not ours:
    return []
  keras = {(r.get(SOURCE), r["batch"]): r for r in RESULTS if r["part"] == "train_step"
           and r["impl"] == "keras" and "skipped" not in r}
  numerics = {(r.get(SOURCE), r["conv_impl"], r["batch"]): r for r in RESULTS
              if r["part"] == "onednn_numerics"}
  lines = ["", "CPU train step with XLA's oneDNN recipe (`--parts onednn`; each XLA_FLAGS setting in "
           "a process of its own), against Keras `train_on_batch` in the same run:", "",
           "| conv_impl | XLA_FLAGS | batch | dtype | ms/step | Keras ms/step | Keras ms / radjax ms "
           "| recipe vs default: loss diff, max gradient diff / max gradient |",
           "|---|---|---|---|---|---|---|---|"]
  for r in ours:
    conv_impl = r["variant"].split("=", 1)[1]
    peer = keras.get((r.get(SOURCE), r["batch"]))
    versus = (f"{peer['ms_per_step']:.1f} | {peer['ms_per_step'] / r['ms_per_step']:.2f}x"
              if peer else " | ")
    check = numerics.get((r.get(SOURCE), conv_impl, r["batch"]))
    scale = numerics.get((r.get(SOURCE), "xla vs gemm", r["batch"]))
    same = ""
    if r["onednn"] != "default" and check:
      same = f"{check['loss_abs_diff']:.1e}, {check['grad_max_diff_fraction']:.1e}"
      if scale:
        within = all(check[k] <= ONEDNN_SCALE_FACTOR * scale[k]
                     for k in ("loss_abs_diff", "grad_max_diff_fraction"))
        same += (f" ({'within' if within else 'beyond'} {ONEDNN_SCALE_FACTOR:g}x the lowerings' "
                 "difference)")
    flags = "oneDNN recipe" if r["onednn"] != "default" else "radjax' own"
    lines.append(f"| {conv_impl} | {flags} | {r['batch']} | {r['dtype']} | "
                 f"{r['ms_per_step']:.1f} | {versus} | {same} |")
  for (source, compared, batch), check in numerics.items():
    if " vs " in compared and source == ours[0].get(SOURCE):
      lines.append(f"| (for scale: {compared}, radjax' flags) | | {batch} | float32 | | | | "
                   f"{check['loss_abs_diff']:.1e}, {check['grad_max_diff_fraction']:.1e} |")
  return lines


def _xla_flags_table() -> list[str]:
  """The xla_flags part's rows: each setting's step time and what its program hands to YNNPACK
  and oneDNN, against the first row of its file (XLA's defaults)."""
  rows = [r for r in RESULTS if r.get("study") == "xla_flags" and "skipped" not in r]
  if not rows:
    return []
  lines = ["", "CPU train step under each XLA_FLAGS setting alone (`--parts xla_flags`; each in a "
           "process of its own, exactly as written):", "",
           "| conv_impl | XLA_FLAGS | batch | dtype | ms/step | vs. the file's first row "
           "| YNNPACK fusions (convolutions) | oneDNN calls |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    first = next(o for o in rows if o.get(SOURCE) == r.get(SOURCE))
    change = (f"{r['ms_per_step'] / first['ms_per_step'] - 1:+.0%}" if r is not first else "")
    flags = f"`{r['xla_flags']}`" if r["xla_flags"] else "(none: XLA's defaults)"
    lines.append(f"| {r['variant'].split('=', 1)[1]} | {flags} | {r['batch']} | {r['dtype']} | "
                 f"{r['ms_per_step']:.1f} | {change} | {r['ynn_fusions']} "
                 f"({r['ynn_convolutions']}) | {r['onednn_calls']} |")
  return lines


def _gpu_vs_cpu_table() -> list[str]:
  """`--device both`: the hello_world epoch end to end and the bare step on each device of one
  run, side by side with CPU / GPU ratios, and the machine they ran on."""
  e2e = {(r.get(SOURCE), r.get("device")): r for r in RESULTS
         if r["part"] == "end_to_end" and "skipped" not in r}
  lines = []
  for (source, device), gpu in e2e.items():
    cpu = e2e.get((source, "cpu"))
    if device != "gpu" or cpu is None:
      continue
    machine = next((r for r in RESULTS if r["part"] == "machine" and r.get(SOURCE) == source), {})
    gpus = sorted({d.split(":", 1)[1] for d in machine.get("devices", []) if d.startswith("gpu")})
    lines += ["", f"GPU against CPU on one machine ({', '.join(gpus) or 'GPU'}; CPU: "
              f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores), hello_world at "
              f"{gpu.get('image_size')}x{gpu.get('image_size')}, {gpu['data']}, augment on "
              f"{gpu['augment_on']}:", "", "| what | CPU | GPU | CPU / GPU |", "|---|---|---|---|"]

    def row(what, c, g, unit):
      lines.append(f"| {what} | {c:.3f} {unit} | {g:.3f} {unit} | {c / g:.1f}x |")

    row("epoch 1 (compiling included)", cpu["epoch_s"][0], gpu["epoch_s"][0], "s")
    if len(cpu["epoch_s"]) > 1 and len(gpu["epoch_s"]) > 1:
      for key, what in (("epoch_s", "later epochs, mean"), ("train_s", "  training"),
                        ("precise_bn_s", "  precise BN"), ("val_s", "  validation")):
        row(what, statistics.mean(cpu[key][1:]), statistics.mean(gpu[key][1:]), "s")
    steps = {r["device"]: r for r in RESULTS if r["part"] == "train_step" and r["impl"] == "radjax"
             and not r.get("variant") and r.get(SOURCE) == source and "skipped" not in r
             and r["batch"] == gpu["batch"] and r["dtype"] == "float32"}
    if "cpu" in steps and "gpu" in steps:
      row(f"train step alone, batch {gpu['batch']} float32", steps["cpu"]["ms_per_step"],
          steps["gpu"]["ms_per_step"], "ms")
  return lines
