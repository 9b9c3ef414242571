"""scripts/benchmark.py's bookkeeping (no timing here): variants, the table's ratios from JSON
lines, and a deadline that skips measurements with a reason instead of losing the run."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "benchmark.py"


@pytest.fixture
def bench_script():
  # The script's measurements are the modules of scripts/bench/: loaded afresh with it, so that
  # each test starts with no records, as a fresh load of the one-file script did.
  for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
    del sys.modules[name]
  spec = importlib.util.spec_from_file_location("radjax_benchmark", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_variants_are_config_overrides_plus_the_step_input(bench_script):
  assert bench_script.step.variant_overrides("") == ([], "float")
  assert bench_script.step.variant_overrides("pool_impl=window, bn_grad=autodiff") == (
      ["--config.pool_impl=window", "--config.bn_grad=autodiff"], "float")
  assert bench_script.step.variant_overrides("input=uint8,conv_impl=gemm") == (
      ["--config.conv_impl=gemm"], "uint8")
  with pytest.raises(ValueError, match="input must be one of float, uint8"):
    bench_script.step.variant_overrides("input=jpeg")
  assert bench_script.step.points("5:float32,256:bfloat16") == [(5, "float32"), (256, "bfloat16")]


def _step(impl, device, batch, dtype, ms, variant=""):
  return {"part": "train_step", "impl": impl, "device": device, "batch": batch, "dtype": dtype,
          "variant": variant, "ms_per_step": ms, "images_per_s": batch * 1e3 / ms, "compile_s": 1.0}


def test_table_ratios_come_from_the_same_batch_and_dtype(tmp_path):
  records = [
      {"part": "machine"},
      _step("radjax", "gpu", 5, "float32", 12.8),
      _step("torch-fp32", "gpu", 5, "float32", 42.2),
      _step("torch-bf16", "gpu", 5, "bfloat16", 48.0),  # no radjax bfloat16 row at batch 5
      _step("radjax", "gpu", 5, "float32", 16.0, variant="input=uint8"),
      _step("radjax", "cpu", 5, "float32", 1541.0),
      {"part": "end_to_end", "impl": "radjax", "device": "gpu", "batch": 5, "steps_per_epoch": 13,
       "epoch_s": [0.5], "train_s": [0.3328], "precise_bn_s": [0.1], "val_s": [0.0672],
       "train_images_per_s": [195.3], "data": "arrays", "augment_on": "device"},
      {"part": "train_step", "impl": "radjax gpu 256 bfloat16", "skipped": "--deadline 10 s reached"},
  ]
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  out = subprocess.run([sys.executable, str(SCRIPT), "--table", str(path)], capture_output=True,
                       text=True, check=True).stdout
  rows = {line.split("|")[2].strip() + "/" + line.split("|")[3].strip(): line
          for line in out.splitlines() if line.startswith("| train step")}
  assert rows["torch-fp32/gpu"].rstrip().endswith("| 3.30x |")  # 42.2 / 12.8
  assert rows["torch-bf16/gpu"].rstrip().endswith("| 3.75x |")  # 48.0 / radjax float32's 12.8
  assert rows["radjax (input=uint8)/gpu"].rstrip().endswith("| 1.25x |")  # 16.0 / 12.8
  assert "| GPU/CPU | radjax | gpu vs cpu | 5 | float32 | | 120.4x |" in out  # 1541 / 12.8
  # 0.3328 s / (13 x 12.8 ms) = 2.00x; 0.5 / (0.1664 + 0.0672) = 2.14x
  assert "| 1 | 0.500 | 0.333 | 0.100 | 0.067 | 195.3 | 2.00x | 2.14x |" in out
  assert "skipped: train_step radjax gpu 256 bfloat16: --deadline 10 s reached" in out


def test_xla_flags_rows_compare_with_the_default_build_and_feed_their_own_end_to_end(tmp_path):
  flags = "--xla_gpu_enable_command_buffer=-CONVOLUTION"
  records = [
      _step("radjax", "gpu", 5, "float32", 10.0),
      {**_step("radjax", "gpu", 5, "float32", 15.0), "xla_flags": flags},
      _step("torch-fp32", "gpu", 5, "float32", 40.0),
      {"part": "end_to_end", "impl": "radjax", "device": "gpu", "batch": 5, "steps_per_epoch": 13,
       "epoch_s": [0.3], "train_s": [0.195], "precise_bn_s": [0.05], "val_s": [0.055],
       "train_images_per_s": [333.3], "data": "arrays", "augment_on": "device",
       "xla_flags": flags},
  ]
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  out = subprocess.run([sys.executable, str(SCRIPT), "--table", str(path)], capture_output=True,
                       text=True, check=True).stdout
  assert f"| train step | radjax (XLA_FLAGS={flags}) | gpu | 5 | float32 | 15.0 |" in out
  flagged = next(line for line in out.splitlines() if f"XLA_FLAGS={flags})" in line)
  assert flagged.rstrip().endswith("| 1.50x |")  # the default build, 10 ms, against its 15 ms
  torch = next(line for line in out.splitlines() if "torch-fp32" in line)
  assert torch.rstrip().endswith("| 4.00x |")  # against the default build, not the flagged one
  # The end-to-end epochs ran under the flags: their ratios use the flagged step (15 ms).
  assert f"augment on device, gpu backend, XLA_FLAGS={flags}" in out
  assert "| 1 | 0.300 | 0.195 | 0.050 | 0.055 | 333.3 | 1.00x | 1.20x |" in out


def test_step_at_picks_points_and_records_name_the_users_xla_flags(tmp_path, bench_script):
  jsonl = tmp_path / "run.jsonl"
  env = {**os.environ, "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  result = subprocess.run(
      [sys.executable, str(SCRIPT), "--deadline", "0", "--parts", "step", "--peers", "none",
       "--step-at", "5:float32,7:bfloat16", "--jsonl", str(jsonl)],
      capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in jsonl.read_text().splitlines()]
  assert [r["impl"] for r in records[1:]] == ["radjax cpu 5 float32", "radjax cpu 7 bfloat16"]
  import radjax
  # The machine record has everything XLA ran with, radjax' defaults too; a radjax record only
  # what the user added, so that radjax as shipped is the unlabelled row.
  assert records[0]["xla_flags"] == (f"--xla_cpu_enable_fast_math=false {radjax.GPU_XLA_FLAGS} "
                                    f"{radjax.CPU_XLA_FLAGS}")
  bench_script.records.USER_XLA_FLAGS = "--xla_cpu_enable_fast_math=false"
  bench_script.emit(part="train_step", impl="radjax", ms_per_step=1.0)
  bench_script.emit(part="train_step", impl="torch-fp32", ms_per_step=1.0)
  ours, torch = bench_script.records.RESULTS[-2:]
  assert ours["xla_flags"] == "--xla_cpu_enable_fast_math=false" and "xla_flags" not in torch


def test_a_passed_deadline_skips_each_measurement_and_still_prints_the_table(tmp_path):
  jsonl = tmp_path / "run.jsonl"
  result = subprocess.run(
      [sys.executable, str(SCRIPT), "--deadline", "0", "--parts", "step,e2e,compile",
       "--peers", "none", "--batch-sizes", "5", "--dtypes", "float32", "--jsonl", str(jsonl)],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in jsonl.read_text().splitlines()]
  assert [r["part"] for r in records] == ["machine", "train_step", "end_to_end", "compile_cache"]
  assert all(r["skipped"] == "--deadline 0 s reached" for r in records[1:])
  assert "| part | impl | device |" in result.stdout


def test_table_of_a_missing_file_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, str(SCRIPT), "--table", str(tmp_path / "none.jsonl")],
                          capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.strip() == (f"benchmark: {tmp_path / 'none.jsonl'}: no such file "
                                   "(no measurement finished?)")


def test_table_compares_records_only_within_one_file_and_machine(tmp_path):
  h200 = {"part": "machine", "cpu": "Xeon", "cores": 16, "devices": ["gpu:NVIDIA H200"]}
  h100 = {"part": "machine", "cpu": "Xeon", "cores": 16, "devices": ["gpu:NVIDIA H100"]}
  first, second = tmp_path / "h200.jsonl", tmp_path / "h100.jsonl"
  # The first file: radjax, and a CPU step appended later by another run on the same machine.
  first.write_text("".join(json.dumps(r) + "\n" for r in [
      h200, _step("radjax", "gpu", 5, "float32", 10.0),
      {"part": "pipeline", "impl": "radjax", "batch": 5, "images_per_s": 800.0},
      h200, _step("radjax", "cpu", 5, "float32", 1500.0)]))
  # The second: another card's peers (and a pipeline run of its own), without radjax steps.
  second.write_text("".join(json.dumps(r) + "\n" for r in [
      h100, _step("torch-fp32", "gpu", 5, "float32", 40.0),
      {"part": "pipeline", "impl": "keras", "batch": 5, "images_per_s": 100.0}]))
  out = subprocess.run([sys.executable, str(SCRIPT), "--table", str(first), str(second)],
                       capture_output=True, text=True, check=True).stdout
  torch = next(line for line in out.splitlines() if "torch-fp32" in line)
  assert torch.split("|")[-2].strip() == ""  # no ratio against another file's (card's) radjax
  keras = next(line for line in out.splitlines() if "| input pipeline | keras" in line)
  assert keras.split("|")[-2].strip() == ""
  assert "| GPU/CPU | radjax | gpu vs cpu | 5 | float32 | | 150.0x |" in out  # same machine

  # The same records in one file on one machine are compared.
  both = tmp_path / "both.jsonl"
  both.write_text(first.read_text() + second.read_text().replace("H100", "H200"))
  out = subprocess.run([sys.executable, str(SCRIPT), "--table", str(both)],
                       capture_output=True, text=True, check=True).stdout
  torch = next(line for line in out.splitlines() if "torch-fp32" in line)
  assert torch.rstrip().endswith("| 4.00x |")
  keras = next(line for line in out.splitlines() if "| input pipeline | keras" in line)
  assert keras.rstrip().endswith("| 8.00x |")


def _table_of(records, tmp_path) -> str:
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return subprocess.run([sys.executable, str(SCRIPT), "--table", str(path)], capture_output=True,
                        text=True, check=True).stdout


def test_radjax_is_compared_with_the_fastest_pytorch_row_eager_or_compiled(tmp_path):
  records = [
      _step("radjax", "gpu", 256, "bfloat16", 50.0),                      # 5,120 images/s
      _step("torch-bf16", "gpu", 256, "bfloat16", 100.0),                 # 2,560
      {**_step("torch-compile-bf16", "gpu", 256, "bfloat16", 64.0),       # 4,000: the fastest
       "compile_mode": "max-autotune"},
      {**_step("torch-compile-bf16", "gpu", 256, "bfloat16", 80.0), "compile_mode": "default"},
      _step("radjax", "gpu", 5, "float32", 10.0),
      _step("torch-fp32", "gpu", 5, "float32", 30.0),
  ]
  out = _table_of(records, tmp_path)
  # 64 / 50 = 1.28x against the compiled row, not 2.00x against eager
  assert ("| radjax bfloat16 / fastest PyTorch (torch-compile-bf16 (max-autotune), bfloat16) "
          "| radjax | gpu | 256 | bfloat16 | | | | | **1.28x** |") in out
  assert "| radjax float32 / fastest PyTorch (torch-fp32, float32) | radjax | gpu | 5 |" in out
  assert "**3.00x**" in out
  assert "| train step | torch-compile-bf16 (default) | gpu | 256 | bfloat16 | 80.0 |" in out


def test_device_both_prints_gpu_against_cpu_for_the_epoch_and_the_step(tmp_path):
  def e2e(device, epochs, train, bn, val):
    return {"part": "end_to_end", "impl": "radjax", "device": device, "batch": 5,
            "steps_per_epoch": 13, "epoch_s": epochs, "train_s": train, "precise_bn_s": bn,
            "val_s": val, "train_images_per_s": [1.0] * len(epochs), "data": "arrays",
            "augment_on": "device", "image_size": 299}
  records = [
      {"part": "machine", "cpu": "Xeon 8480", "cores": 16, "devices": ["gpu:NVIDIA H200"]},
      _step("radjax", "gpu", 5, "float32", 10.0),
      _step("radjax", "cpu", 5, "float32", 400.0),
      e2e("gpu", [20.0, 0.2, 0.3], [0.1, 0.12, 0.14], [10.0, 0.03, 0.05], [5.0, 0.02, 0.02]),
      e2e("cpu", [90.0, 8.0, 10.0], [50.0, 5.0, 6.0], [20.0, 2.0, 3.0], [2.0, 0.5, 0.7]),
  ]
  out = _table_of(records, tmp_path)
  assert "GPU against CPU on one machine (NVIDIA H200; CPU: Xeon 8480, 16 cores)" in out
  assert "| epoch 1 (compiling included) | 90.000 s | 20.000 s | 4.5x |" in out
  assert "| later epochs, mean | 9.000 s | 0.250 s | 36.0x |" in out      # (8+10)/2 over (0.2+0.3)/2
  assert "|   training | 5.500 s | 0.130 s | 42.3x |" in out
  assert "|   precise BN | 2.500 s | 0.040 s | 62.5x |" in out
  assert "|   validation | 0.600 s | 0.020 s | 30.0x |" in out
  assert "| train step alone, batch 5 float32 | 400.000 ms | 10.000 ms | 40.0x |" in out


def test_the_onednn_table_sets_each_setting_against_keras_and_reports_the_numbers(tmp_path):
  recipe = "--xla_cpu_experimental_onednn_custom_call=true"
  records = [
      {"part": "machine", "cpu": "Xeon", "cores": 2},
      {**_step("radjax", "cpu", 5, "float32", 1600.0, variant="conv_impl=gemm"), "onednn": "default"},
      {**_step("radjax", "cpu", 5, "float32", 1250.0, variant="conv_impl=xla"), "onednn": "onednn",
       "xla_flags": recipe},
      _step("keras", "cpu", 5, "float32", 1000.0),
      {"part": "onednn_numerics", "impl": "radjax", "conv_impl": "xla", "batch": 5, "loss": 0.7,
       "loss_abs_diff": 2e-7, "grad_max_diff_fraction": 3e-5},
      {"part": "onednn_numerics", "impl": "radjax", "conv_impl": "gemm", "batch": 5, "loss": 0.7,
       "loss_abs_diff": 3e-7, "grad_max_diff_fraction": 3e-5},
      {"part": "onednn_numerics", "impl": "radjax", "conv_impl": "xla vs gemm", "batch": 5,
       "loss": 0.7, "loss_abs_diff": 1e-7, "grad_max_diff_fraction": 2e-5},
  ]
  out = _table_of(records, tmp_path)
  assert "| gemm | radjax' own | 5 | float32 | 1600.0 | 1000.0 | 0.62x |  |" in out  # 1000 / 1600
  # 2e-7 <= 2 x 1e-7 and 3e-5 <= 2 x 2e-5: within; gemm's 3e-7 > 2 x 1e-7: beyond
  assert ("| xla | oneDNN recipe | 5 | float32 | 1250.0 | 1000.0 | 0.80x | 2.0e-07, 3.0e-05 "
          "(within 2x the lowerings' difference) |") in out
  records.append({**_step("radjax", "cpu", 5, "float32", 1700.0, variant="conv_impl=gemm"),
                  "onednn": "onednn", "xla_flags": recipe})
  assert ("| gemm | oneDNN recipe | 5 | float32 | 1700.0 | 1000.0 | 0.59x | 3.0e-07, 3.0e-05 "
          "(beyond 2x the lowerings' difference) |") in _table_of(records, tmp_path)
  assert ("| (for scale: xla vs gemm, radjax' flags) | | 5 | float32 | | | | 1.0e-07, 2.0e-05 |"
          in out)
  # the oneDNN rows are not also listed among the plain train-step rows
  assert "| train step | radjax (conv_impl=xla" not in out


def test_hlo_library_calls_counts_ynnpack_fusions_their_convolutions_and_onednn_calls(
    bench_script):
  hlo = "\n".join([
      '%ynn_fusion.2 = f32[2,37,37,32] fusion(%a, %k), kind=kCustom, calls=%f.2, metadata='
      '{op_name="jit(train_step)/backbone/stem_1/conv/conv_general_dilated"}, backend_config='
      '{"fusion_config":{"kind":"__ynn_fusion"}}',
      '%ynn_fusion.1 = f32[32] fusion(%ynn_fusion.2), kind=kCustom, calls=%f.1, metadata='
      '{op_name="jit(train_step)/backbone/stem_1/bn/reduce_sum"}, backend_config='
      '{"fusion_config":{"kind":"__ynn_fusion"}}',
      '%ynn_fusion.1 is named here again but holds no backend config',
      '%custom-call.3 = f32[2,8] custom-call(%x, %w), custom_call_target="__onednn$matmul"',
      '%loop_fusion.4 = f32[2] fusion(%y), kind=kLoop, calls=%f.4',
  ])
  assert bench_script.xla_flags.hlo_library_calls(hlo) == {
      "ynn_fusions": 2, "ynn_convolutions": 1, "onednn_calls": 1}


def test_the_xla_flags_table_sets_each_setting_against_the_files_first_row(tmp_path):
  def row(conv_impl, flags, ms, ynn, ynn_conv, onednn=0):
    return {**_step("radjax", "cpu", 5, "float32", ms, variant=f"conv_impl={conv_impl}"),
            "xla_flags": flags, "study": "xla_flags", "ynn_fusions": ynn,
            "ynn_convolutions": ynn_conv, "onednn_calls": onednn}

  off = "--xla_cpu_experimental_ynn_fusion_type="
  records = [{"part": "machine", "cpu": "EPYC", "cores": 2},
             row("xla", "", 2500.0, 283, 94), row("xla", off, 1600.0, 0, 0),
             row("gemm", "", 2000.0, 150, 0),
             {"part": "xla_flags", "impl": "radjax", "xla_flags": "--bad", "conv_impl": "xla",
              "skipped": "child exited 1: unknown flag"}]
  out = _table_of(records, tmp_path)
  assert "| xla | (none: XLA's defaults) | 5 | float32 | 2500.0 |  | 283 (94) | 0 |" in out
  assert f"| xla | `{off}` | 5 | float32 | 1600.0 | -36% | 0 (0) | 0 |" in out  # 1600/2500 - 1
  assert "| gemm | (none: XLA's defaults) | 5 | float32 | 2000.0 | -20% | 150 (0) | 0 |" in out
  assert "skipped: xla_flags radjax: child exited 1: unknown flag" in out
  # each file's rows are set against that file's own first row (another machine, another day)
  other = tmp_path / "other.jsonl"
  other.write_text("".join(json.dumps(r) + "\n" for r in [
      {"part": "machine", "cpu": "Xeon", "cores": 2}, row("xla", "", 2000.0, 283, 94),
      row("xla", off, 1500.0, 0, 0)]))
  both = subprocess.run([sys.executable, str(SCRIPT), "--table", str(tmp_path / "results.jsonl"),
                         str(other)], capture_output=True, text=True, check=True).stdout
  assert f"| xla | `{off}` | 5 | float32 | 1600.0 | -36% | 0 (0) | 0 |" in both
  assert f"| xla | `{off}` | 5 | float32 | 1500.0 | -25% | 0 (0) | 0 |" in both  # 1500/2000 - 1
  # the study's rows are not also listed among the plain train-step rows, whose header, with no
  # row under it, is left out
  assert "| train step | radjax (conv_impl=xla" not in out and "| part | impl |" not in out
  assert out.startswith("CPU train step under each XLA_FLAGS setting alone")


@pytest.mark.slow
def test_each_xla_flags_setting_runs_exactly_as_written_in_its_own_process(
    bench_script, jit_cache, monkeypatch):
  """XLA's defaults hand ops to YNNPACK; radjax' own flag, named in a row, hands none:
  the child must not add radjax' defaults to a setting (75x75, batch 2, one step)."""
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jit_cache)
  monkeypatch.setattr(bench_script.xla_flags, "XLA_FLAG_SETTINGS", (
      ("xla", ""), ("xla", "--xla_cpu_experimental_ynn_fusion_type="),
      ("xla", "--xla_no_such_flag=1")))
  args = bench_script.argparse.Namespace(variants_at="2:float32", image_size=75, warmup=0,
                                         steps=1, repeats=1)
  bench_script.records.RESULTS.clear()
  bench_script.xla_flags.bench_xla_flags(args)
  defaults, radjax_own, unknown = bench_script.records.RESULTS
  # XLA refuses an unknown flag at start-up: that setting is reported, the others kept
  assert unknown["part"] == "xla_flags" and unknown["xla_flags"] == "--xla_no_such_flag=1"
  assert unknown["skipped"].startswith("child exited ")
  del bench_script.records.RESULTS[2]
  assert [r["xla_flags"] for r in bench_script.records.RESULTS] == [
      "", "--xla_cpu_experimental_ynn_fusion_type="]
  # (which ops XLA hands to YNNPACK by default changes between versions; some it always does)
  assert defaults["ynn_fusions"] > 0 and defaults["ynn_fusions"] >= defaults["ynn_convolutions"]
  assert radjax_own["ynn_fusions"] == 0
  for r in bench_script.records.RESULTS:
    assert r["study"] == "xla_flags" and r["variant"] == "conv_impl=xla" and r["batch"] == 2
    assert r["ms_per_step"] > 0 and r["image_size"] == 75


@pytest.mark.slow
def test_the_end_to_end_epochs_of_another_backend_come_from_a_child_process(
    bench_script, dataset_dir, tmp_path, jit_cache, monkeypatch):
  """`--device both` on a GPU machine runs the CPU's epochs in a child that sees only the CPU;
  here the CPU is that backend too, so the child's record must be a real run's: one epoch at
  75x75 from arrays, its phases adding up to less than the epoch."""
  from radjax.commands import cli

  npz = tmp_path / "tiny.npz"
  assert cli.main(["export-arrays", "--config", "hello_world", "--out", str(npz),
                   "--config.image_size=75", f"--config.data_dir={dataset_dir}"]) == 0
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jit_cache)
  args = bench_script.argparse.Namespace(e2e_epochs=1, image_size=75, data_dir=str(dataset_dir),
                                         arrays=str(npz), augment_on=None)
  bench_script.records.RESULTS.clear()
  bench_script.epoch.bench_end_to_end_elsewhere("cpu", args)
  (record,) = [r for r in bench_script.records.RESULTS if r["part"] == "end_to_end"]
  assert record["device"] == "cpu" and record["data"] == "arrays"
  assert record["augment_on"] == "device" and record["image_size"] == 75
  assert record["steps_per_epoch"] == 13  # 65 training films in batches of 5
  (epoch,) = record["epoch_s"]
  assert 0 < record["train_s"][0] + record["val_s"][0] < epoch
  # a child that fails says why, in one line
  args.arrays = str(tmp_path / "missing.npz")
  with pytest.raises(RuntimeError, match="the cpu child .*missing.npz"):
    bench_script.epoch.bench_end_to_end_elsewhere("cpu", args)
