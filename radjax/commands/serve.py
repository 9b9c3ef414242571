"""`radjax serve`: a local reading page for a trained run or an export.

    radjax serve --workdir runs/hello            # Grad-CAM overlays too
    radjax serve --model hello.radjax --port 8001

A reader drops or picks PNG, JPEG or DICOM files; each is sent alone to `POST /predict` and
answered with the image as decoded, every class' probability, the decision at the stored
operating point (and which threshold), the Grad-CAM overlay when served from a run, and for DICOM
the modality, VOI and photometric interpretation used. Uploads are decoded from memory and never
written to disk; one larger than `--max-mb` is refused; a bad file is answered with its one-line
error. The model is compiled once at start (a warm-up answer), so each answer is one forward pass
(plus Grad-CAM's). Starlette serves the page and uvicorn runs it, on 127.0.0.1 unless `--host`
names another interface.
"""

from __future__ import annotations

import base64
import io
import logging
import threading

import numpy as np

from radjax.data import borders, images, preprocess
from radjax.errors import UserError
from radjax.metrics.probabilities import decided_labels, sigmoid, softmax

log = logging.getLogger("radjax")

DEFAULT_MAX_MB = 32
SHOWN_SIDE = 512  # pixels of the longer side of the images sent back to the page
GRADCAM_LAYER = "mixed10"
GRADCAM_ALPHA = 0.45


class Reader:
  """A model that answers one decoded film: from a run (`run.load`, with Grad-CAM) or an export."""

  def __init__(self, workdir=None, model=None, which: str = "best"):
    from radjax.training import decisions

    self.lock = threading.Lock()  # one forward pass at a time: 2 cores gain nothing from more
    if model is not None:
      from radjax import exported

      self.exported = exported.load(model)
      self.trained = None
      self.config, self.class_names = self.exported.config, self.exported.class_names
      self.task, point = self.exported.task, self.exported.metadata["operating_point"]
      self.source = f"{model} (stored: {point.get('source', point.get('rule'))})"
      self.cut, self.threshold = point.get("threshold_logit"), point.get("threshold")
    else:
      from radjax.training import run as run_lib

      self.exported = None
      self.trained = run_lib.load(workdir, which)
      self.config, self.class_names = self.trained.config, self.trained.class_names
      self.task = self.trained.task
      self.threshold, self.cut, self.source = decisions.run_decision(workdir, self.trained)
    # Compiled once, now: the first reader waits for nothing.
    size = self.config.image_size
    self.answer(np.full((size, size, 3), 128.0, np.float32), "warm-up")

  def _logits(self, image: np.ndarray) -> np.ndarray:
    if self.exported is not None:
      return self.exported.logits(image[None])[0]
    batch = preprocess.pad_batch({"image": image[None], "label": np.zeros(1, np.int32)}, 1)
    return np.asarray(self.trained.steps.logits_of(self.trained.variables, [batch])[0][0])

  def answer(self, pixels: np.ndarray, name: str, high_bit: bool = False,
             dicom_info: dict | None = None) -> dict:
    """The page's answer for one decoded film."""
    cropped = borders.crop_borders(pixels, self.config.crop_borders)  # shown as the model saw it
    image = preprocess.model_input(cropped, self.config, high_bit)
    with self.lock:
      logits = self._logits(image)
      cam = self._gradcam(image, logits, cropped.shape[:2]) if self.trained is not None else None
    names = self.class_names
    decision = decided_labels(np.asarray(logits)[None], self.task, names, self.cut)[0]
    if self.task == "binary":
      p = float(sigmoid(logits))
      probabilities = {names[0]: 1 - p, names[1]: p}
      rule = f"p({names[1]}) > {self.threshold:.4f} calls {names[1]} ({self.source})"
    elif self.task == "multiclass":
      probabilities = dict(zip(names, map(float, softmax(logits))))
      rule = "the most probable class"
    else:
      probabilities = dict(zip(names, map(float, sigmoid(logits))))
      rule = "each label above its threshold: " + ", ".join(
          f"{n} {t:.4f}" for n, t in self.threshold.items()) + f" ({self.source})"
    return {"name": name, "probabilities": probabilities, "decision": decision, "rule": rule,
            "image": _png(cropped), "gradcam": None if cam is None else _png(_overlay(cropped, cam)),
            "dicom": dicom_info, "error": None}

  def _gradcam(self, image, logits, shape) -> np.ndarray:
    """Grad-CAM of the decided class on the film as cropped (`explanation.gradcam`)."""
    import jax

    from radjax.training import explanation

    multilabel = self.task == "multilabel"
    target = int(logits > 0) if np.ndim(logits) == 0 else int(np.argmax(logits))
    cam, _ = explanation.gradcam(self.trained.model, jax.device_get(self.trained.variables), image,
                             GRADCAM_LAYER, sign=1.0 if target or multilabel else -1.0,
                             target=target)
    return explanation.to_original(cam, shape[0], shape[1], self.config)


def _overlay(pixels: np.ndarray, cam: np.ndarray) -> np.ndarray:
  """The film with the Grad-CAM map blended over it in matplotlib's "jet" colours."""
  from matplotlib import colormaps

  heat = cam / (cam.max() or 1.0)
  colours = colormaps["jet"](heat)[..., :3] * 255.0
  return (1 - GRADCAM_ALPHA) * np.clip(pixels, 0, 255) + GRADCAM_ALPHA * colours


def _png(pixels: np.ndarray) -> str:
  """A data URL of the image (longer side at most SHOWN_SIDE)."""
  from PIL import Image

  image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
  image.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decode_upload(reader: Reader, name: str, data: bytes) -> dict:
  """One uploaded file's answer, or its one-line error (never a stack trace)."""
  info: dict = {}
  try:
    pixels = images.read_image(name, reader.config.dicom_voi, data=data, info=info)
  except images.ImageReadError as e:
    return {"name": name, "error": str(e)}
  dicom_info = None
  if info:
    dicom_info = {"modality": info.get("modality") or _modality(data),
                  "voi": info.get("voi"), "window": info.get("window"),
                  "photometric": info.get("photometric"), "inverted": info.get("inverted")}
  high_bit = bool(info) and int(info.get("bits_stored", 8)) > 8
  try:
    return reader.answer(pixels, name, high_bit, dicom_info)
  except UserError as e:
    return {"name": name, "error": f"{name}: {e}"}


def _modality(data: bytes) -> str | None:
  import pydicom

  try:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).get("Modality", "")) \
        or None
  except Exception:  # the pixels decoded: a missing Modality is no error
    return None


def make_app(reader: Reader, max_mb: float = DEFAULT_MAX_MB):
  """The Starlette application: GET / (the page), POST /predict (one file), GET /info."""
  from starlette.applications import Starlette
  from starlette.concurrency import run_in_threadpool
  from starlette.responses import HTMLResponse, JSONResponse
  from starlette.routing import Route

  limit = int(max_mb * 2**20)

  async def page(request):
    return HTMLResponse(PAGE.replace("{{MAX_MB}}", f"{max_mb:g}"))

  async def info(request):
    return JSONResponse({"class_names": reader.class_names, "task": reader.task,
                         "decision": reader.source, "gradcam": reader.trained is not None,
                         "max_mb": max_mb})

  async def predict(request):
    # The file is the request's body (its name in ?name=), read into memory with the limit
    # checked as it arrives: multipart forms would spool large files to disk.
    name = request.query_params.get("name") or "upload"
    if int(request.headers.get("content-length") or 0) > limit:
      return JSONResponse({"name": name, "error": f"{name}: larger than {max_mb:g} MB"},
                          status_code=413)
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > limit:
        return JSONResponse({"name": name, "error": f"{name}: larger than {max_mb:g} MB"},
                            status_code=413)
      chunks.append(chunk)
    try:
      answer = await run_in_threadpool(decode_upload, reader, name, b"".join(chunks))
    except Exception as e:  # nothing a reader sends shows a stack trace
      log.exception("answering %s", name)
      answer = {"name": name, "error": f"{name}: {type(e).__name__}: {e}".splitlines()[0]}
    return JSONResponse(answer)

  return Starlette(routes=[Route("/", page), Route("/info", info),
                           Route("/predict", predict, methods=["POST"])])


def serve(workdir=None, model=None, host: str = "127.0.0.1", port: int = 8000,
          which: str = "best", max_mb: float = DEFAULT_MAX_MB) -> None:
  import uvicorn

  reader = Reader(workdir, model, which)
  print(f"radjax serve: {workdir or model} on http://{host}:{port}/ (decisions: {reader.source}); "
        "Ctrl-C stops it", flush=True)
  uvicorn.run(make_app(reader, max_mb), host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>radjax</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f6f6f4; color: #222; }
 #drop { border: 2px dashed #888; border-radius: 8px; padding: 1.5rem; text-align: center;
         background: #fff; }
 #drop.over { background: #e8f0ff; }
 .card { display: flex; gap: 1rem; background: #fff; border-radius: 8px; padding: 1rem;
         margin-top: 1rem; box-shadow: 0 1px 3px #0002; }
 .card img { max-width: 320px; max-height: 320px; }
 .decision { font-size: 1.4rem; font-weight: 600; }
 .error { color: #b00020; font-weight: 600; }
 table { border-collapse: collapse; } td { padding: 0.1rem 0.6rem; }
 .bar { background: #4a78c2; height: 0.7rem; display: inline-block; }
 .muted { color: #666; font-size: 0.9rem; }
</style></head>
<body>
<h1>radjax</h1>
<p class="muted" id="about"></p>
<div id="drop">Drop PNG, JPEG or DICOM files here, or
 <input type="file" id="files" multiple accept=".png,.jpg,.jpeg,.dcm,.dicom,application/dicom">
 <div class="muted">Files stay in this server's memory for one answer; at most {{MAX_MB}} MB each.
 Research use only: not a medical device.</div></div>
<div id="results"></div>
<script>
const results = document.getElementById("results");
fetch("info").then(r => r.json()).then(i => {
  document.getElementById("about").textContent =
    `Classes: ${i.class_names.join(", ")} (${i.task}); decisions: ${i.decision}` +
    (i.gradcam ? "; Grad-CAM shows the evidence for the decided class" : "");
});
function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
function card(a) {
  const c = document.createElement("div");
  c.className = "card";
  c.dataset.name = a.name;
  if (a.error) {
    c.innerHTML = `<div><b>${esc(a.name)}</b><div class="error">${esc(a.error)}</div></div>`;
    return c;
  }
  const rows = Object.entries(a.probabilities).map(([n, p]) =>
    `<tr><td>${esc(n)}</td><td>${p.toFixed(4)}</td>` +
    `<td><span class="bar" style="width:${Math.round(p * 150)}px"></span></td></tr>`).join("");
  const dicom = a.dicom ? `<div class="muted">DICOM: modality ${esc(a.dicom.modality || "?")},
    VOI ${esc(a.dicom.voi)}${a.dicom.window ? " " + esc(JSON.stringify(a.dicom.window)) : ""},
    ${esc(a.dicom.photometric)}${a.dicom.inverted ? " (inverted for display)" : ""}</div>` : "";
  c.innerHTML = `<img src="${a.image}" alt="image">` +
    (a.gradcam ? `<img src="${a.gradcam}" alt="Grad-CAM">` : "") +
    `<div><b>${esc(a.name)}</b><div class="decision">${esc(a.decision)}</div>
     <div class="muted">${esc(a.rule)}</div><table>${rows}</table>${dicom}</div>`;
  return c;
}
async function send(file) {
  const placeholder = card({name: file.name, error: "reading..."});
  placeholder.classList.add("pending");
  results.prepend(placeholder);
  let answer;
  try {
    const response = await fetch("predict?name=" + encodeURIComponent(file.name),
                                 {method: "POST", body: file,
                                  headers: {"Content-Type": "application/octet-stream"}});
    answer = await response.json();
  } catch (e) {
    answer = {name: file.name, error: "no answer from the server"};
  }
  answer.name = answer.name || file.name;
  placeholder.replaceWith(card(answer));
}
document.getElementById("files").addEventListener("change", e => {
  for (const f of e.target.files) send(f);
});
const drop = document.getElementById("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  for (const f of e.dataTransfer.files) send(f);
});
</script></body></html>
"""
