"""The PyTorch peer: torchvision's inception_v3 with the paper's head and Adam, eager and compiled
by `torch.compile` (each of `--torch-compile`'s modes), in float32 or bfloat16 autocast with
channels_last, at the same batch and image size as radjax' step and timed the same way. It is the
framework users compare with on a GPU; "radjax / fastest PyTorch" sets radjax against its fastest
row. Skipped when torch or torchvision is not installed.
"""

from __future__ import annotations

import statistics
import time

from bench.records import emit
from bench.step import timed_repeats


def bench_torch_step(device_kind: str, batch: int, mode: str, args,
                     compile_mode: str | None = None) -> None:
  """torchvision's InceptionV3 with the paper's head and Adam, eager or (`compile_mode`, one of
  torch.compile's modes) compiled by inductor; `mode` fp32, or bf16 autocast with channels_last."""
  impl = f"torch-{mode}" if compile_mode is None else f"torch-compile-{mode}"
  try:
    import torch
    import torchvision
  except ImportError as e:
    emit(part="train_step", impl=impl, skipped=f"not installed ({e.name})")
    return
  device = torch.device("cuda" if device_kind == "gpu" else "cpu")
  backbone = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
  backbone.fc = torch.nn.Sequential(torch.nn.Linear(2048, 256), torch.nn.ReLU(),
                                    torch.nn.Dropout(0.5), torch.nn.Linear(256, 1))
  model = backbone.to(device).train()
  bf16 = mode == "bf16"
  if bf16:
    model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
  images = torch.rand(batch, 3, args.image_size, args.image_size, device=device) * 2 - 1
  if bf16:
    images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, 2, (batch, 1), device=device).float()
  loss_fn = torch.nn.BCEWithLogitsLoss()
  # The forward and (through AOTAutograd) backward pass compiled; Adam stays eager, as most
  # compiled training loops run it.
  forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(forward(images).float(), labels)
    loss.backward()
    opt.step()

  def run(n):
    def once():
      for _ in range(n):
        step()
      if device.type == "cuda":
        torch.cuda.synchronize()
    return once

  start = time.perf_counter()
  run(1)()
  compile_s = time.perf_counter() - start
  run(args.warmup)()
  times = timed_repeats(run(args.steps), args.repeats)
  ms = statistics.median(times) / args.steps * 1e3
  peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
  if device.type == "cuda":  # give the memory back for the next JAX measurement
    del model, backbone, opt, images, labels, forward
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
  if compile_mode is not None:
    torch._dynamo.reset()  # the next measurement compiles afresh, as a new process would
  emit(part="train_step", impl=impl, device=device_kind, batch=batch,
       dtype="bfloat16" if bf16 else "float32", image_size=args.image_size, ms_per_step=ms,
       images_per_s=batch * 1e3 / ms, first_step_s=compile_s, peak_memory_gb=peak,
       repeats=[t / args.steps * 1e3 for t in times], version=torch.__version__,
       **({} if compile_mode is None else {"compile_mode": compile_mode}))


# PyTorch's counterpart of each radjax dtype: float32, or bfloat16 autocast with channels_last.
TORCH_MODES = {"float32": "fp32", "bfloat16": "bf16"}
