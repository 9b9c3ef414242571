"""Settings: every bad value refused at load with one line naming it; shipped configs by name."""

import os
import pathlib

import pytest

from radjax.training import config as config_lib
from radjax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
HELLO = REPO / "configs" / "hello_world.py"


@pytest.mark.parametrize("override,message", [
    ("--config.batch_size=0", "--config.batch_size=0: must be at least 1"),
    ("--config.batch_size=-5", "--config.batch_size=-5: must be at least 1"),
    ("--config.eval_batch_size=0", "--config.eval_batch_size=0: must be at least 1"),
    ("--config.num_epochs=0", "--config.num_epochs=0: must be at least 1"),
    ("--config.image_size=50", "--config.image_size=50: InceptionV3 needs at least 75x75"),
    ("--config.resize=bogus", "--config.resize=bogus: expected one of squash, pad"),
    ("--config.resize_method=cubic", "--config.resize_method=cubic: expected one of"),
    ("--config.value_range=zero_one", "--config.value_range=zero_one: expected one of inception"),
    ("--config.dicom_voi=lut", "--config.dicom_voi=lut: expected one of auto, window, voi_lut"),
    ("--config.fine_tune=some", "--config.fine_tune=some: expected 'all', 'head' or 'from:mixedN'"),
    ("--config.fine_tune=from:mixed11", "--config.fine_tune=from:mixed11"),
    ("--config.dtype=float16", "--config.dtype=float16: expected one of float32, bfloat16"),
    ("--config.conv_impl=cudnn", "--config.conv_impl=cudnn: expected one of auto, xla, gemm"),
    ("--config.pool_impl=gemm", "--config.pool_impl=gemm: expected one of auto, xla, window"),
    ("--config.bn_grad=fused", "--config.bn_grad=fused: expected one of auto, closed_form"),
    ("--config.augment.fill_mode=wrap", "--config.augment.fill_mode=wrap: expected one of nearest"),
    ("--config.augment.fill_mode=constant", "--config.augment.fill_mode=constant"),
    ("--config.augment.interpolation=bicubic", "--config.augment.interpolation=bicubic"),
    ("--config.augment.zoom_range=-0.2", "--config.augment.zoom_range=-0.2: cannot be negative"),
    ("--config.dropout_rate=1.0", "--config.dropout_rate=1.0: expected 0 <= rate < 1"),
    ("--config.learning_rate=0", "--config.learning_rate=0.0: must be a positive number"),
    ("--config.keep_checkpoints=0", "--config.keep_checkpoints=0: must be at least 1"),
    ("--config.precise_bn_images_per_call=-1", "--config.precise_bn_images_per_call=-1: cannot be"),
])
def test_bad_settings_are_refused_at_load_naming_the_setting(override, message):
  with pytest.raises(UserError) as e:
    config_lib.load_config(HELLO, [override], device_count=1)
  assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_batch_sizes_must_divide_over_the_devices():
  config_lib.load_config(HELLO, ["--config.batch_size=6", "--config.eval_batch_size=10"],
                         device_count=2)
  with pytest.raises(UserError, match=r"--config.batch_size=5: must be divisible by the number of "
                                      r"devices \(2\)"):
    config_lib.load_config(HELLO, [], device_count=2)


def test_the_shipped_configs_are_valid_and_load_by_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ folder here: the installed radjax.configs is used
  by_name = config_lib.load_config("hello_world", device_count=1)
  assert by_name.to_dict() == config_lib.load_config(HELLO, device_count=1).to_dict()
  assert by_name.resize_method == "nearest" and by_name.batch_size == 5
  for name in ("default", "smoke"):
    config_lib.load_config(name, device_count=1)
  # robust is hello_world plus border cropping and acquisition augmentation, nothing else.
  robust = config_lib.flatten(config_lib.load_config("robust", device_count=1).to_dict())
  hello = config_lib.flatten(by_name.to_dict())
  assert {k: v for k, v in robust.items() if hello[k] != v} == {
      "crop_borders": "auto", "augment.framing.probability": 0.5,
      "augment.overlays.probability": 0.5, "augment.intensity.probability": 0.5,
      "augment.intensity.gamma": 2.0, "augment.intensity.contrast": 0.6,
      "augment.intensity.brightness": 0.25, "augment.intensity.noise": 0.06,
      "augment.intensity.blur": 1.5}
  with pytest.raises(UserError, match="no such config file .*shipped: default, hello_world, robust, "
                                      "smoke"):
    config_lib.load_config("hello_wrld", device_count=1)
  own = tmp_path / "mine.py"
  own.write_text("from radjax.configs import default\n\n\ndef get_config():\n"
                 "  config = default.get_config()\n  config.num_epochs = 3\n  return config\n")
  assert config_lib.load_config(own, device_count=1).num_epochs == 3
  broken = tmp_path / "broken.py"
  broken.write_text("from configs import nothing\n")
  with pytest.raises(UserError, match="broken.py: the config file fails to run"):
    config_lib.load_config(broken, device_count=1)


def test_resume_changes_split_into_forbidden_and_recorded():
  stored = config_lib.load_config(HELLO, [], device_count=1).to_dict()
  new = config_lib.load_config(HELLO, ["--config.image_size=99", "--config.learning_rate=1e-5",
                                       "--config.fine_tune=head", "--config.num_epochs=40",
                                       "--config.augment.zoom_range=0.1"], device_count=1)
  forbidden, allowed = config_lib.resume_changes(stored, new)
  assert forbidden == {"image_size": [299, 99]}
  assert allowed == {"learning_rate": [1e-4, 1e-5], "fine_tune": ["all", "head"],
                     "augment.zoom_range": [0.2, 0.1]}  # num_epochs: a longer run, same run
  # A checkpoint written before a setting existed compares it with its default.
  del stored["precise_bn"]
  assert config_lib.resume_changes(stored, config_lib.load_config(HELLO, [], device_count=1)) == ({}, {})


def test_auto_implementations_resolve_per_backend_and_explicit_ones_stay():
  from radjax.training import run

  config = config_lib.load_config(HELLO, [])
  # radjax.CPU_XLA_FLAGS is in this process' XLA_FLAGS (radjax set it), so CPU convolutions are
  # XLA's own (the test below checks both ways in fresh processes).
  assert run.implementations(config, "cpu") == {"conv_impl": "xla", "pool_impl": "window",
                                                "bn_grad": "closed_form", "bn_stats": "two_pass"}
  assert run.implementations(config, "tpu") == run.implementations(config, "gpu")
  config = config_lib.load_config(HELLO, ["--config.pool_impl=xla", "--config.bn_grad=autodiff",
                                           "--config.bn_stats=one_pass", "--config.conv_impl=gemm"])
  assert run.implementations(config, "cpu") == {"conv_impl": "gemm", "pool_impl": "xla",
                                                "bn_grad": "autodiff", "bn_stats": "one_pass"}
  model = run.create_model(config)  # this machine's backend is the CPU
  assert model.conv.__name__ == "GemmConv" and model.max_pool.__name__ == "xla_max_pool"
  assert model.bn_closed_form_grad is False and model.bn_one_pass is True


def test_precise_bn_passes_per_backend_and_explicit():
  from radjax.training import run

  config = config_lib.load_config(HELLO, [])  # batch 5, precise_bn_images_per_call=0 (auto)
  assert run.precise_bn_batches_per_call(config, "cpu") == 1
  assert run.precise_bn_batches_per_call(config, "gpu") == 12  # 64 images: 12 whole batches
  assert run.precise_bn_batches_per_call(config, "tpu") == 12
  config = config_lib.load_config(HELLO, ["--config.precise_bn_images_per_call=3"])
  assert run.precise_bn_batches_per_call(config, "gpu") == 1  # less than a batch: one batch
  config = config_lib.load_config(HELLO, ["--config.precise_bn_images_per_call=20"])
  assert run.precise_bn_batches_per_call(config, "cpu") == 4


def test_radjax_puts_convolutions_in_cuda_graphs_unless_the_user_chose(tmp_path):
  import subprocess
  import sys

  def flags_after_import(user):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if user is not None:
      env["XLA_FLAGS"] = user
    # JAX must still start its backend with them (the CPU ignores the GPU flag).
    out = subprocess.run([sys.executable, "-c", "import os, radjax, jax; jax.devices(); "
                          "print(os.environ['XLA_FLAGS'])"], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()

  import radjax
  installed = radjax._jaxlib_version()
  for user in (None, "--xla_cpu_enable_fast_math=false", "--xla_gpu_enable_command_buffer="):
    assert flags_after_import(user) == radjax.xla_flags_with_defaults(user or "", installed)


def test_radjax_adds_only_the_xla_flags_its_jaxlib_knows_and_the_user_did_not_set():
  import radjax

  gpu, cpu = radjax.GPU_XLA_FLAGS, radjax.CPU_XLA_FLAGS
  assert gpu == "--xla_gpu_enable_command_buffer=+CONVOLUTION"
  assert cpu == "--xla_cpu_experimental_ynn_fusion_type="
  add = radjax.xla_flags_with_defaults
  for jaxlib in ((0, 10), (0, 11)):
    assert add("", jaxlib) == f"{gpu} {cpu}"
    assert add("--xla_cpu_enable_fast_math=false", jaxlib) == (
        f"--xla_cpu_enable_fast_math=false {gpu} {cpu}")
    assert add("--xla_gpu_enable_command_buffer=", jaxlib) == (
        f"--xla_gpu_enable_command_buffer= {cpu}")
    assert add("--xla_cpu_experimental_ynn_fusion_type=individual_convolution", jaxlib) == (
        f"--xla_cpu_experimental_ynn_fusion_type=individual_convolution {gpu}")
  assert add("", (0, 12)) == gpu  # the CPU flag is unmeasured beyond 0.11
  assert add("", (1, 0)) == gpu
  for old in ((0, 9), (0, 4), (0, 0)):  # (0, 0): jaxlib's version unreadable
    assert add("--xla_cpu_enable_fast_math=false", old) == "--xla_cpu_enable_fast_math=false"


def test_jaxlib_version_is_major_minor_or_zero_when_unreadable(monkeypatch):
  from importlib import metadata

  import radjax

  for text, expected in (("0.11.2", (0, 11)), ("0.10.2.dev20260101", (0, 10)), ("1.0", (1, 0)),
                         ("nightly", (0, 0)), ("7", (0, 0))):
    monkeypatch.setattr(metadata, "version", lambda name, text=text: text)
    assert radjax._jaxlib_version() == expected, text

  def missing(name):
    raise metadata.PackageNotFoundError(name)

  monkeypatch.setattr(metadata, "version", missing)
  assert radjax._jaxlib_version() == (0, 0)


CONV_GRADIENT_HLO = """
import json, os, sys
import radjax
import jax, jax.numpy as jnp
from jax import lax
from radjax.training import run
x, w = jnp.ones((2, 32, 32, 64)), jnp.ones((3, 3, 64, 64))
conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=1))
print(json.dumps({"xla_flags": os.environ["XLA_FLAGS"],
                  "ynnpack": "ynn_fusion" in grad.lower(x, w).compile().as_text(),
                  "cpu_conv": run.IMPLEMENTATIONS["cpu"]["conv_impl"]}))
"""


@pytest.mark.parametrize("user_flags", ["", "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"])
def test_radjax_xla_flags_reach_xla_and_a_users_own_setting_wins(user_flags):
  """In a fresh process (XLA reads XLA_FLAGS once): importing radjax turns XLA's YNNPACK
  convolution fusions off, which the compiled HLO shows, and the CPU's conv_impl "auto" becomes
  lax.conv; a YNNPACK setting of the user's own is kept, YNNPACK fuses, and "auto" stays GEMM."""
  import json
  import subprocess
  import sys

  import radjax

  env = {**os.environ, "XLA_FLAGS": user_flags}
  done = subprocess.run([sys.executable, "-c", CONV_GRADIENT_HLO], capture_output=True,
                        text=True, env=env, check=True)
  seen = json.loads(done.stdout.strip().splitlines()[-1])
  flags = seen["xla_flags"].split()
  assert radjax.GPU_XLA_FLAGS in flags
  if user_flags:
    assert user_flags in flags and radjax.CPU_XLA_FLAGS not in flags
    assert seen == {**seen, "ynnpack": True, "cpu_conv": "gemm"}
  else:
    assert radjax.CPU_XLA_FLAGS in flags
    assert seen == {**seen, "ynnpack": False, "cpu_conv": "xla"}
