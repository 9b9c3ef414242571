"""`radjax export` and `radjax.exported`: the exported model answers as `radjax predict` does, in
a process without Flax or TensorFlow, and a damaged or foreign export is a one-line error."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import (assert_within_spread, batch_spread, copy_subset, export_logits_at,
                      run_and_export_spread, train_smoke)
from radjax import exported
from radjax.commands import cli
from radjax.training import scoring
from radjax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(dataset_dir, jit_cache, tmp_path_factory):
  """One epoch of the paper's resize (Pillow's nearest: preprocessed without TensorFlow) at 75 px,
  exported."""
  data = copy_subset(dataset_dir, tmp_path_factory.mktemp("data"), {"TRAIN": 5, "VAL": 2})
  workdir = tmp_path_factory.mktemp("run") / "nearest"
  train_smoke(data, workdir, "--config.num_epochs=1", "--config.resize_method=nearest",
              f"--config.compilation_cache={jit_cache}")  # the suite's compiled steps
  model = tmp_path_factory.mktemp("export") / "model.radjax"
  assert cli.main(["export", "--workdir", str(workdir), "--out", str(model)]) == 0
  files = sorted(str(p) for p in data.rglob("*.png"))  # 14 films
  return workdir, model, files + files[:3]  # 17


def test_the_export_holds_what_a_user_needs_to_feed_it(run):
  workdir, model, _ = run
  meta = json.loads((model / exported.METADATA).read_text())
  assert meta["format"] == exported.FORMAT and meta["platforms"] == ["cpu", "cuda"]
  assert meta["preprocessing"] == {"image_size": 75, "resize": "squash", "resize_method": "nearest",
                                   "value_range": "inception", "dicom_voi": "auto",
                                   "crop_borders": "off"}
  assert meta["class_names"] == ["abd", "chest"] and meta["task"] == "binary"
  assert meta["checkpoint"]["epoch"] == 1 and meta["radjax_version"]
  assert meta["operating_point"]["threshold"] == 0.5  # no evaluate yet: predict's default
  assert meta["operating_point"]["threshold_logit"] == 0.0  # logit(0.5): what decisions compare
  assert meta["operating_point"]["source"]
  # the program itself, not only its description, runs on both
  assert exported.load(model)._program.platforms == ("cpu", "cuda")
  assert meta["weights_sha256"] == exported.sha256(model / exported.WEIGHTS)
  program = (model / exported.PROGRAM).read_bytes()
  assert len(program) < 2 * 2**20  # the weights are beside the program, not inside it


FRESH = """
import json, sys
for name in ("flax", "optax", "orbax", "tensorflow", "tensorflow_datasets"):
  sys.modules[name] = None  # importing them now fails
import radjax.exported
from radjax.data import images
model = radjax.exported.load(sys.argv[1])
films = [images.read_image(f) for f in sys.argv[2:]]
out = {n: model.predict(films[:n], batch_size=n, pixel_range=(0, 255))["probabilities"].tolist()
       for n in (1, 3, 17)}
loaded = sorted(m.split(".")[0] for m in sys.modules if sys.modules[m] is not None)
print(json.dumps({"probabilities": out, "modules": loaded}))
"""


def test_a_fresh_process_without_flax_or_tensorflow_answers_as_radjax_predict(run):
  """Probabilities equal `radjax predict`'s to 1e-5 for batches of 1, 3 and 17 films."""
  workdir, model, files = run
  done = subprocess.run([sys.executable, "-c", FRESH, str(model), *files], capture_output=True,
                        text=True, cwd=REPO)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  for name in ("flax", "optax", "orbax", "tensorflow"):
    assert name not in result["modules"]
  want = [p.probability for p in scoring.predict_files(workdir, files)[0]]
  assert sorted(map(int, result["probabilities"])) == [1, 3, 17]
  # predict scored these in batches of 16, the fresh process in batches of 1, 3 and 17
  spread = run_and_export_spread(workdir, model, files, (1, 3, 16, 17))
  for n, probabilities in result["probabilities"].items():
    assert_within_spread(probabilities, want[:int(n)], spread[:int(n)])


def test_predict_decides_at_the_stored_operating_point_whatever_the_chunks(run):
  """17 films in chunks of 5 (5, 5, 5, 2) give the logits of one batch; decisions compare the
  logit with the stored threshold_logit (moved here between two films, so both classes occur)."""
  from radjax.data import images

  _, model, files = run
  loaded = exported.load(model)
  films = [images.read_image(f) for f in files]
  whole = loaded.predict(films, batch_size=17, pixel_range=(0, 255))
  chunked = loaded.predict(films, batch_size=5, pixel_range=(0, 255))
  assert chunked["logits"].shape == (17,)
  # Chunks of 5 and one batch of 17 are other batch shapes: the logits agree to the export's own
  # spread between those shapes (here measured on the first 5 films, which are in both).
  inputs = np.stack([loaded.preprocess(f, pixel_range=(0, 255)) for f in films])
  spread = batch_spread(export_logits_at(loaded), inputs[:5], (5, 17), scores=lambda z: z)
  assert_within_spread(chunked["logits"][:5], whole["logits"][:5], spread)
  assert_within_spread(chunked["logits"], whole["logits"], spread.max())
  assert chunked["labels"] == whole["labels"]
  distinct = np.unique(whole["logits"])  # 14 films, three of them twice
  widest = int(np.argmax(np.diff(distinct)))  # the cut in the widest gap: no film sits near it
  cut = float(distinct[widest] + distinct[widest + 1]) / 2
  loaded.metadata["operating_point"]["threshold_logit"] = cut
  out = loaded.predict(films, batch_size=5, pixel_range=(0, 255))
  assert out["labels"] == ["chest" if z > cut else "abd" for z in out["logits"]]
  assert 0 < out["labels"].count("chest") < 17
  np.testing.assert_allclose(out["probabilities"], 1 / (1 + np.exp(-out["logits"])), rtol=1e-6)


def test_an_arrays_range_is_stated_never_guessed(run, dataset_dir):
  """A film as uint8, as floats /255 with pixel_range=(0, 1) and as floats with (0, 255) scores
  the same; a float array without its range is refused, naming which image (read as 0-255, the
  [0, 1] film is near-black: p(chest) 0.996 became 2.7e-10 with the paper's weights)."""
  from PIL import Image

  _, model, _ = run
  loaded = exported.load(model)
  with Image.open(dataset_dir / "VAL" / "chest" / "chst_val0.png") as img:
    grey = np.asarray(img.convert("L"))
  as_uint8 = loaded.predict([grey])["logits"]
  as_unit = loaded.predict([grey / 255.0], pixel_range=(0, 1))["logits"]
  as_levels = loaded.predict([grey.astype(np.float32)], pixel_range=(0, 255))["logits"]
  # The same input to the network (1/255 steps are rounded back to the same grey levels), so the
  # same batch shape gives the same logit exactly.
  assert as_uint8 == as_unit == as_levels
  with pytest.raises(UserError, match=r"^image 1: a float64 array needs its range stated"):
    loaded.predict([grey, grey / 255.0])
  with pytest.raises(UserError, match=r"^image 0: values span 0..255, outside the stated "
                                      r"pixel_range=\(0, 1\)$"):
    loaded.predict([grey], pixel_range=(0, 1))


def test_predict_with_a_model_prints_what_predict_with_the_run_prints(run, tmp_path, capsys):
  workdir, model, files = run
  val = pathlib.Path(files[0]).parents[2] / "VAL"
  assert cli.main(["predict", "--workdir", str(workdir), str(val)]) == 0
  from_run = capsys.readouterr().out
  assert cli.main(["predict", "--model", str(model), str(val)]) == 0
  captured = capsys.readouterr()
  assert captured.out == from_run
  assert f"Model: {model}; decisions at {model / exported.METADATA}" in captured.err
  assert cli.main(["predict", "--model", str(model), "--tta", "4", str(val)]) == 2
  assert "--tta 4: test-time augmentation needs the run" in capsys.readouterr().err
  assert cli.main(["predict", "--model", str(model), "--checkpoint", "3", str(val)]) == 2
  assert capsys.readouterr().err.strip() == (
      "radjax predict: error: --checkpoint 3: an export holds one checkpoint; export another "
      "with radjax export --checkpoint")
  assert cli.main(["predict", "--model", str(model), "--threshold", "1.5", str(val)]) == 2
  assert "--threshold 1.5: expected a probability strictly between 0 and 1" in \
      capsys.readouterr().err


def _copy(model, tmp_path):
  import shutil

  copy = tmp_path / "copy.radjax"
  shutil.copytree(model, copy)
  return copy


def test_a_damaged_or_foreign_export_is_one_line(run, tmp_path, capsys):
  _, model, files = run
  damaged = _copy(model, tmp_path)
  data = bytearray((damaged / exported.WEIGHTS).read_bytes())
  data[len(data) // 2] ^= 0xFF
  (damaged / exported.WEIGHTS).write_bytes(bytes(data))
  with pytest.raises(UserError, match=r"weights.npz: missing, damaged or from another export "
                                      r"\(its SHA-256 differs from radjax.json's\)"):
    exported.load(damaged)
  # Weights of another run (a valid file, other values) copied in: refused before anything runs.
  swapped = _copy(model, tmp_path / "s")
  with np.load(swapped / exported.WEIGHTS) as f:
    other = {k: f[k] * np.float32(1.01) for k in f.files}
  np.savez(swapped / exported.WEIGHTS, **other)
  with pytest.raises(UserError, match=r"weights.npz: missing, damaged or from another export"):
    exported.load(swapped)
  truncated = _copy(model, tmp_path / "t")
  program = (truncated / exported.PROGRAM).read_bytes()
  (truncated / exported.PROGRAM).write_bytes(program[:len(program) // 3])
  with pytest.raises(UserError, match=r"model.jaxexport: missing, damaged or from another export"):
    exported.load(truncated)
  # An export written before radjax.json named its program's hash: a damaged program is still
  # one line, from the deserializer.
  meta = json.loads((truncated / exported.METADATA).read_text())
  del meta["program_sha256"]
  (truncated / exported.METADATA).write_text(json.dumps(meta))
  with pytest.raises(UserError, match=r"model.jaxexport: cannot be read \(.*export the run again"):
    exported.load(truncated)
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / exported.METADATA).write_text('{"format": "something-else"}')
  with pytest.raises(UserError, match="not a radjax export of format radjax-export-1"):
    exported.load(foreign)
  with pytest.raises(UserError, match="no such export"):
    exported.load(tmp_path / "missing")
  assert cli.main(["predict", "--model", str(tmp_path / "empty"), files[0]]) == 2
  err = capsys.readouterr().err.strip()
  assert err == f"radjax predict: error: {tmp_path / 'empty'}: no such export"
  with pytest.raises(UserError, match=r"expected an image of shape \(H, W\)"):
    exported.load(model).predict([np.zeros((4, 4, 2), np.uint8)])
  with pytest.raises(UserError, match=r"expected a batch of shape \(n, 75, 75, 3\), got "
                                      r"\(2, 10, 10, 3\)"):
    exported.load(model).logits(np.zeros((2, 10, 10, 3)))
  a_file = tmp_path / "model.txt"
  a_file.write_text("not a folder")
  with pytest.raises(UserError, match="model.txt: not a folder \\(an export is the folder"):
    exported.load(a_file)
  unreadable = _copy(model, tmp_path / "u")
  (unreadable / exported.METADATA).write_text("{not json")
  with pytest.raises(UserError, match=r"not a radjax export \(its radjax.json is unreadable: "
                                      r"JSONDecodeError\)"):
    exported.load(unreadable)


def test_export_refuses_a_folder_that_holds_files(run, tmp_path, capsys):
  workdir, _, _ = run
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "x").write_text("keep me")
  assert cli.main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "taken")]) == 2
  assert "exists and is not an empty folder" in capsys.readouterr().err
  assert (tmp_path / "taken" / "x").read_text() == "keep me"
  assert cli.main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "no" / "m")]) == 2
  assert capsys.readouterr().err.strip() == (
      f"radjax export: error: --out {tmp_path / 'no' / 'm'}: no such folder {tmp_path / 'no'}/")


def test_export_fills_an_empty_folder_and_refuses_unstable_custom_calls(run, tmp_path, capsys,
                                                                        monkeypatch):
  from radjax.commands import export

  workdir, model, _ = run
  (tmp_path / "empty").mkdir()
  assert cli.main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "empty")]) == 0
  assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == sorted(
      p.name for p in model.iterdir())
  assert exported.load(tmp_path / "empty").metadata["weights_sha256"] == json.loads(
      (model / exported.METADATA).read_text())["weights_sha256"]
  # The symbolic batch lowers to shape assertions; were they not on jax.export's stable list,
  # the file would be tied to this jaxlib: refused, and nothing is left behind.
  monkeypatch.setattr(export, "ALLOWED_CUSTOM_CALLS", set())
  capsys.readouterr()
  assert cli.main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "m")]) == 2
  assert capsys.readouterr().err.strip() == (
      f"radjax export: error: {workdir}: the model lowers to custom calls outside jax.export's "
      "stable list (shape_assertion); not exported")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ---------------------------------------------------------------------------------------------
# radjax serve
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reader(run):
  from radjax.commands import serve

  workdir, _, _ = run
  return serve.Reader(workdir=workdir)


def _post(app, name: str, data: bytes):
  from starlette.testclient import TestClient

  with TestClient(app) as client:
    return client.post("/predict", params={"name": name}, content=data)


def test_the_page_answers_each_file_as_predict_does_and_names_a_bad_one(run, reader, tmp_path):
  from conftest import write_dicom
  from radjax.commands import serve
  from radjax.data import images

  workdir, model, files = run
  app = serve.make_app(reader, max_mb=1)
  want = {p.path: p for p in scoring.predict_files(workdir, files[:2])[0]}
  # the page scores one film at a time, predict these two in one batch
  spread = dict(zip(files[:2], run_and_export_spread(workdir, model, files[:2], (1, 2))))
  for path in files[:2]:
    answer = _post(app, pathlib.Path(path).name, pathlib.Path(path).read_bytes()).json()
    assert answer["error"] is None and answer["decision"] == want[path].label
    assert_within_spread(answer["probabilities"]["chest"], want[path].probability, spread[path])
    assert answer["image"].startswith("data:image/png;base64,") and answer["gradcam"]
    assert "calls chest" in answer["rule"]
  bad = _post(app, "broken.png", b"not an image").json()
  assert bad["error"].startswith("broken.png: cannot be read as an image") and "\n" not in bad["error"]
  assert "Traceback" not in bad["error"]
  big = _post(app, "big.png", b"\0" * (2**20 + 1))
  assert big.status_code == 413 and big.json()["error"] == "big.png: larger than 1 MB"
  exact = _post(app, "exact.png", b"\0" * 2**20)  # 1 MB is allowed: read, and not an image
  assert exact.status_code == 200
  assert exact.json()["error"].startswith("exact.png: cannot be read as an image")

  def pieces():  # no Content-Length (chunked): the limit is checked as the body arrives
    for _ in range(5):
      yield b"\0" * (2**18 + 1)

  streamed = _post(app, "stream.png", pieces())
  assert streamed.status_code == 413 and streamed.json()["error"] == "stream.png: larger than 1 MB"
  # DICOM: decoded from memory, with what its decoding applied.
  pixels = images.read_image(files[0])[..., 0].astype(np.uint8)
  dcm = write_dicom(tmp_path / "film.dcm", pixels, Modality="DX")
  answer = _post(app, "film.dcm", dcm.read_bytes()).json()
  assert answer["error"] is None and answer["dicom"]["modality"] == "DX"
  assert answer["dicom"]["photometric"] == "MONOCHROME2" and answer["dicom"]["voi"] == "none"
  assert not list(tmp_path.glob("**/*.png"))  # nothing the page was sent is written to disk


def test_the_page_names_an_empty_body_and_text_named_png_and_answers_20_uploads_at_once(
    run, reader, tmp_path):
  """An empty upload and a text file named .png are one line each; 20 uploads sent at once to a
  real server on a free loopback port (bounded: 20 requests, a 120 s limit) each get their own
  file's answer, the one a single upload gets."""
  import concurrent.futures
  import socket
  import threading
  import time
  import urllib.parse
  import urllib.request

  import uvicorn

  from radjax.commands import serve

  _, _, files = run
  app = serve.make_app(reader)
  empty = _post(app, "empty.png", b"")
  assert empty.status_code == 200 and empty.json()["error"] == "empty.png: empty file (0 bytes)"
  text = _post(app, "notes.png", b"Patient notes, not an image\n").json()
  assert text["error"].startswith("notes.png: cannot be read as an image (") and \
      "\n" not in text["error"]
  films = files[:4]  # two abdomen and two chest films, each sent 5 times
  alone = {pathlib.Path(f).name: _post(app, pathlib.Path(f).name, pathlib.Path(f).read_bytes())
           .json()["probabilities"] for f in films}
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  try:
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
      time.sleep(0.1)
    assert server.started

    def upload(k):
      path = pathlib.Path(films[k % len(films)])
      query = urllib.parse.urlencode({"name": path.name})
      request = urllib.request.Request(f"http://127.0.0.1:{port}/predict?{query}",
                                       data=path.read_bytes(), method="POST")
      with urllib.request.urlopen(request, timeout=120) as reply:
        return path.name, reply.status, json.loads(reply.read())

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
      answers = list(pool.map(upload, range(20)))
  finally:
    server.should_exit = True
    thread.join(timeout=30)
  assert len(answers) == 20
  for name, status, answer in answers:
    assert status == 200 and answer["error"] is None and answer["name"] == name
    # One film at a time through the same batch-1 program: the same answer exactly.
    assert answer["probabilities"] == alone[name]


def test_an_unexpected_failure_is_answered_in_one_line(reader, monkeypatch):
  from radjax.commands import serve

  def broken(reader, name, data):
    raise RuntimeError("the decoder fell over\nat line 2 of somewhere")

  monkeypatch.setattr(serve, "decode_upload", broken)
  answer = _post(serve.make_app(reader), "film.png", b"bytes")
  assert answer.status_code == 200
  assert answer.json() == {"name": "film.png",
                           "error": "film.png: RuntimeError: the decoder fell over"}


def test_the_page_serves_an_export_without_grad_cam(run):
  from starlette.testclient import TestClient

  from radjax.commands import serve

  workdir, model, files = run
  app = serve.make_app(serve.Reader(model=model))
  with TestClient(app) as client:
    assert client.get("/info").json()["gradcam"] is False
    assert "Drop PNG, JPEG or DICOM files here" in client.get("/").text
  answer = _post(app, "a.png", pathlib.Path(files[0]).read_bytes()).json()
  want = scoring.predict_files(workdir, files[:1])[0][0]
  assert answer["gradcam"] is None and answer["decision"] == want.label


def test_serve_without_its_extra_or_with_bad_flags_is_one_line(tmp_path, capsys):
  # Without uvicorn: in a process of its own (a half-imported uvicorn would stay behind here).
  code = ("import sys; sys.modules['uvicorn'] = None\n"
          "from radjax.commands import cli\n"
          f"sys.exit(cli.main(['serve', '--workdir', {str(tmp_path)!r}]))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
  assert done.returncode == 2 and done.stderr.strip() == (
      "radjax serve: error: radjax serve needs Starlette and uvicorn (uvicorn is missing): "
      "pip install -e '.[serve]'")
  for flags, why in ((["--max-mb", "0"], "--max-mb 0.0: expected a size in MB above 0"),
                     (["--port", "70000"], "--port 70000: expected a port number, 1-65535")):
    assert cli.main(["serve", "--workdir", str(tmp_path), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"radjax serve: error: {why}"


def _browser():
  import shutil

  for browser in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(browser) and shutil.which("chromedriver"):
      return shutil.which(browser), shutil.which("chromedriver")
  return None


@pytest.mark.skipif(_browser() is None, reason="no chromium and chromedriver installed "
                                                "(apt-get install chromium chromium-driver)")
def test_a_real_browser_reads_the_films_and_the_error(run, reader, dataset_dir, tmp_path):
  """Chromium, driven by selenium, uploads a chest film, an abdomen film and a damaged file to a
  server on a free loopback port and reads what the page shows."""
  import os
  import shutil
  import socket
  import threading
  import time

  import uvicorn
  from selenium import webdriver
  from selenium.webdriver.chrome.options import Options
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  from radjax.commands import serve

  workdir, _, _ = run
  films = [str(sorted((dataset_dir / "VAL" / c).glob("*.png"))[0]) for c in ("chest", "abd")]
  damaged = tmp_path / "damaged.png"
  damaged.write_bytes(pathlib.Path(films[0]).read_bytes()[:300])
  want = {pathlib.Path(p.path).name: p.label for p in scoring.predict_files(workdir, films)[0]}
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = uvicorn.Server(uvicorn.Config(serve.make_app(reader), host="127.0.0.1", port=port,
                                         log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  browser, driver_path = _browser()
  options = Options()
  options.binary_location = browser
  for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
               "--window-size=1280,1400"):
    options.add_argument(flag)
  driver = None
  try:
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
      time.sleep(0.1)
    assert server.started
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.get(f"http://127.0.0.1:{port}/")
    driver.find_element(By.ID, "files").send_keys("\n".join([*films, str(damaged)]))
    WebDriverWait(driver, 180).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card:not(.pending)")) == 3)
    cards = {c.get_attribute("data-name"): c for c in driver.find_elements(By.CSS_SELECTOR, ".card")}
    for name, label in want.items():
      assert cards[name].find_element(By.CLASS_NAME, "decision").text == label
      assert len(cards[name].find_elements(By.TAG_NAME, "img")) == 2  # the film and Grad-CAM
    error = cards["damaged.png"].find_element(By.CLASS_NAME, "error").text
    assert error.startswith("damaged.png: cannot be read as an image") and "Traceback" not in error
    assert "Classes: abd, chest (binary)" in driver.find_element(By.ID, "about").text
    shot = tmp_path / "serve.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    if os.environ.get("RADJAX_SCREENSHOT_DIR"):  # how docs/serve.png is made
      shutil.copy(shot, os.environ["RADJAX_SCREENSHOT_DIR"])
  finally:
    if driver is not None:
      driver.quit()
    server.should_exit = True
    thread.join(timeout=30)
