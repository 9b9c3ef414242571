"""radjax: train and use radiograph classifiers in JAX (the tutorial's chest/abdomen and beyond).

Start with the tutorial's data:
  radjax audit DATA                      check a dataset (counts, sizes, duplicates, bad files)
  radjax train --config hello_world --workdir runs/hello --config.data_dir=DATA
  radjax evaluate --workdir runs/hello   metrics, confusion matrix, ROC curve
  radjax predict --workdir runs/hello scan.dcm more_scans/
  radjax stress --workdir runs/hello     flip rates under framing, burned-in text, acquisition
  radjax export --workdir runs/hello --out hello.radjax   portable StableHLO + weights (radjax.exported)
  radjax serve --workdir runs/hello      a local reading page on http://127.0.0.1:8000/
  radjax cv --config hello_world --workdir runs/cv --folds 5 --config.data_dir=DATA
  radjax export-arrays --config hello_world --out data.npz --config.data_dir=DATA   (for TF-less GPUs)
  radjax prepare --config hello_world DATA OUT   decode once to a TFDS dataset (streamed when large)

DATA holds TRAIN/ and VAL/ (optional TEST/), each with one folder per class; or it is a CSV
manifest (path,label,split, or path,split and a 1/0/blank column per finding), a .npz from
export-arrays, or a folder from prepare.
Every training setting is listed in configs/default.py; `radjax COMMAND --help` for details.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _convert_weights(args) -> int:
  from radjax.models import weights

  variables = weights.keras_h5_to_variables(args.keras_h5)
  out = weights.save_variables(variables, args.out_dir)
  n = sum(int(x.size) for x in __import__("jax").tree.leaves(variables))
  print(f"Converted {args.keras_h5} -> {out} ({n:,} values: params + BatchNorm statistics)")
  return 0


def _output_folder(path, flag: str) -> None:
  """Refuses, before any work, an output folder that names an existing file."""
  import pathlib

  from radjax.errors import UserError

  if path and pathlib.Path(path).exists() and not pathlib.Path(path).is_dir():
    raise UserError(f"{flag} {path}: is a file; name a folder for the outputs")


def _seed(text: str) -> int:
  """A seed: a whole number >= 0 (NumPy's and TensorFlow's seeds cannot be negative)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
  return value


def _audit(args) -> int:
  import json

  from radjax.commands import audit

  report = audit.audit(args.data_dir, dicom_voi=args.dicom_voi)
  print(json.dumps(report, indent=2) if args.json else audit.format_report(report))
  return 0


def _split(args) -> int:
  from radjax.commands import split

  result = split.split_dataset(args.src, args.dst, val=args.val, seed=args.seed, folds=args.folds,
                               test=args.test, group_by=args.group_by or "")
  print(split.format_summary(result, args.dst))
  return 0


def _augment_preview(args) -> int:
  from radjax.commands import preview

  from radjax.training import config as config_lib

  n = preview.DEFAULT_VARIANTS if args.n is None else args.n
  config = config_lib.load_config(args.config, args.overrides, device_count=1)
  result = preview.augment_preview(args.data_dir, args.out, image=args.image, n=n, seed=args.seed,
                                   config=config)
  width, height = result["size"]
  print(f"Wrote {result['out']} ({width}x{height} px): {result['image']}, original + {n} "
        "augmented versions")
  return 0


def _train(args) -> int:
  from radjax.training import config as config_lib, loop as train

  config = config_lib.load_config(args.config, args.overrides)
  try:
    train.train_and_evaluate(config, args.workdir)
  except train.TrainingError as e:
    print(f"radjax train: {e}", file=sys.stderr)
    return 1
  print(f"Curves: {args.workdir}/curves.png  checkpoints: {args.workdir}/checkpoints\n"
        f"Next: radjax evaluate --workdir {args.workdir}")
  return 0


def _image_counts(folders) -> str:
  """"train 65, val 10": images per split (a multilabel set's counts are per label positives)."""
  return ", ".join(f"{split} {len(examples)}" for split, examples in folders.splits.items())


def _export_arrays(args) -> int:
  from radjax.data import arrays, datasets, listing
  from radjax.training import config as config_lib

  config = config_lib.load_config(args.config, args.overrides)
  folders = datasets.list_every_split(listing.resolve_data_dir(config.data_dir).resolve(),
                                      config.dicom_voi)
  result = arrays.export(config, args.out, folders)
  counts = _image_counts(folders)
  print(f"Wrote {result['path']} ({result['bytes'] / 2**20:.1f} MiB; {counts} images). Train "
        f"from it without TensorFlow: --config.data_dir={result['path']} "
        "--config.augment_on=device")
  return 0


def _prepare(args) -> int:
  import pathlib
  import time

  from radjax.training import config as config_lib
  from radjax.data import datasets, prepared
  from radjax.errors import UserError

  config = config_lib.load_config(args.config, args.overrides)
  source = pathlib.Path(args.data)
  if not source.exists():
    raise UserError(f"{source}: no such folder or CSV file")
  if prepared.is_prepared(source):
    raise UserError(f"{source}: is already a prepared dataset; train from it")
  started = time.perf_counter()
  folders = datasets.list_every_split(source.resolve(), config.dicom_voi)
  result = prepared.prepare(config, folders, args.out)
  seconds = time.perf_counter() - started
  counts = _image_counts(folders)
  print(f"Prepared {result['path']} in {seconds:.0f} s: {result['images']} images ({counts}), "
        f"{result['bytes'] / 2**20:,.1f} MiB on disk, {result['decoded_bytes'] / 2**20:,.1f} MiB "
        f"decoded. Train from it: --config.data_dir={result['path']}")
  return 0


def _cv(args) -> int:
  from radjax.training import config as config_lib
  from radjax.commands import cv

  config = config_lib.load_config(args.config, args.overrides)
  summary = cv.cross_validate(config, args.workdir, args.folds, args.seeds, args.manifest)
  print(cv.format_summary(summary))
  print(f"Wrote {args.workdir}/{cv.SUMMARY}, {cv.ROC_FIGURE}, {cv.PREDICTIONS_CSV}; each fold's "
        f"run in {args.workdir}/seed_S/fold_K")
  return 0


def _evaluate(args) -> int:
  from radjax.commands import evaluate
  from radjax.training import evaluation

  _output_folder(args.out, "--out")
  result = evaluation.evaluate_workdir(args.workdir, args.data, args.split, args.checkpoint,
                                       args.out, args.target_sensitivity)
  print(evaluate.format_metrics(result))
  print("Wrote " + ", ".join(result["written"]))
  return 0


def _export(args) -> int:
  from radjax.commands import export

  result = export.export_workdir(args.workdir, args.out, args.checkpoint)
  print(f"Wrote {result['path']} ({result['bytes'] / 2**20:.1f} MiB; checkpoint of epoch "
        f"{result['epoch']}, for {' and '.join(result['platforms'])}). Load it with "
        f"radjax.exported.load({result['path']!r}) or radjax predict --model {result['path']} FILES")
  return 0


def _serve(args) -> int:
  from radjax.commands import serve
  from radjax.errors import UserError

  try:  # the `serve` extra: say so rather than fail with an import traceback
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
  except ImportError as e:
    raise UserError(f"radjax serve needs Starlette and uvicorn ({e.name} is missing): "
                    "pip install -e '.[serve]'") from None
  if args.max_mb <= 0:
    raise UserError(f"--max-mb {args.max_mb}: expected a size in MB above 0")
  if not 0 < args.port < 65536:
    raise UserError(f"--port {args.port}: expected a port number, 1-65535")
  if args.host not in ("127.0.0.1", "localhost", "::1"):
    print(f"radjax serve: listening on {args.host}: other machines can reach this page",
          file=sys.stderr)
  serve.serve(args.workdir, args.model, args.host, args.port, args.checkpoint, args.max_mb)
  return 0


def _stress(args) -> int:
  from radjax.commands import stress
  from radjax.training import stress as stress_lib

  _output_folder(args.out, "--out")
  result = stress_lib.stress_workdir(args.workdir, args.data, args.split, args.checkpoint,
                                     args.out, args.families, args.seed)
  print(stress.format_stress(result))
  print("Wrote " + ", ".join(result["written"]))
  return 0


def _predict(args) -> int:
  import pathlib

  from radjax.training import decisions, run as run_lib, scoring
  from radjax.errors import UserError

  if args.csv:  # checked before any image is decoded
    folder = pathlib.Path(args.csv).parent
    if not folder.is_dir():
      raise UserError(f"--csv {args.csv}: no such folder {folder}/")
    if pathlib.Path(args.csv).is_dir():
      raise UserError(f"--csv {args.csv}: is a folder; name the CSV file to write")
  if args.tta < 0:
    raise UserError(f"--tta {args.tta}: expected a number of augmented copies >= 0")
  if args.model:
    return _predict_exported(args)
  trained = run_lib.load(args.workdir, args.checkpoint)  # once: its metadata decides the threshold
  meta = {**trained.meta, "epoch": trained.epoch}
  task = trained.task
  if task == "multiclass":
    if args.threshold is not None:
      raise UserError(f"--threshold {args.threshold}: a multiclass run calls the most probable "
                      "class; thresholds apply to binary and multilabel runs")
    threshold = threshold_logit = None
    print("Decision: the most probable class (multiclass run)", file=sys.stderr)
  elif task == "multilabel":  # each label above its own threshold
    threshold, threshold_logit, source = decisions.label_thresholds(
        args.workdir, meta["class_names"], args.threshold, meta)
    print("Decision: each label above its threshold ("
          + ", ".join(f"{n} {t:.4f}" for n, t in threshold.items()) + f"; from {source})",
          file=sys.stderr)
  else:
    threshold, threshold_logit, source = decisions.decision_threshold(args.workdir,
                                                                      args.threshold, meta)
    print(f"Threshold: probability > {threshold:.4f} calls the second class (from {source})",
          file=sys.stderr)
  results, class_names = scoring.predict_files(args.workdir, args.inputs, args.checkpoint,
                                               threshold=threshold, tta=args.tta,
                                               tta_seed=args.seed, threshold_logit=threshold_logit,
                                               trained=trained)
  return _print_predictions(args, results, class_names, threshold, task)


def _predict_exported(args) -> int:
  from radjax.errors import UserError
  from radjax.training import scoring

  if args.tta:
    raise UserError(f"--tta {args.tta}: test-time augmentation needs the run (--workdir); an "
                    "export holds the inference function only")
  if args.checkpoint != "best":
    raise UserError(f"--checkpoint {args.checkpoint}: an export holds one checkpoint; export "
                    "another with radjax export --checkpoint")
  results, class_names, threshold, source = scoring.predict_exported(args.model, args.inputs,
                                                                     args.threshold)
  print(f"Model: {args.model}; decisions at {source}", file=sys.stderr)
  task = "binary" if threshold is not None and not isinstance(threshold, dict) else (
      "multilabel" if isinstance(threshold, dict) else "multiclass")
  return _print_predictions(args, results, class_names, threshold, task)


def _print_predictions(args, results, class_names, threshold, task) -> int:
  from radjax.commands import predict

  if args.json:
    print(predict.format_json(results, class_names, threshold))
  elif args.csv:
    with open(args.csv, "w", newline="") as f:
      f.write(predict.format_csv(results, class_names, multiclass=task != "binary"))
    print(predict.format_text(results, class_names))
    print(f"Wrote {args.csv}")
  else:
    print(predict.format_text(results, class_names))
  failed = [r for r in results if r.error]
  if failed:  # each named once, where the predictions are; here only how many
    where = 'their "error" fields above' if args.json else "the ERROR lines above"
    print(f"radjax predict: {len(failed)} of {len(results)} file(s) could not be read: {where}",
          file=sys.stderr)
  return 1 if failed or not results else 0


def _explain(args) -> int:
  from radjax.commands import explain

  _output_folder(args.out, "--out")
  done, errors, class_names = explain.explain_files(args.workdir, args.inputs, args.out,
                                                    args.checkpoint, args.layer, args.target_class)
  for e in done:
    shown = (f"p({class_names[1]})={e.probability:.4f}" if e.probabilities is None else
             "  ".join(f"p({n})={p:.4f}" for n, p in e.probabilities.items()))
    other = f"  (maps: evidence for {e.explained})" if e.explained != e.label else ""
    print(f"{e.path}  {shown}  {e.label}{other}  -> {e.figure}")
  for path, why in errors:
    print(f"radjax explain: error: {path}: {why}", file=sys.stderr)
  print(f"Wrote {len(done)} figure(s) to {args.out}")
  return 1 if errors or not done else 0


def _config_argument(p) -> None:
  """--config of the commands that take a config and --config.NAME=VALUE overrides."""
  p.add_argument("--config", required=True,
                 help="config file (e.g. configs/hello_world.py) or a shipped config's name "
                      "(default, hello_world, smoke)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="radjax", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("convert-weights", help="Keras InceptionV3 notop .h5 -> Orbax checkpoint")
  p.add_argument("keras_h5", help="Keras legacy HDF5 weights file (include_top=False)")
  p.add_argument("out_dir", help="directory to write the Orbax checkpoint to")
  p.set_defaults(func=_convert_weights)

  p = sub.add_parser("audit", help="counts, sizes, unreadable files and duplicates of a dataset")
  p.add_argument("data_dir", help="dataset folder (TRAIN/, VAL/, ... or one folder per class)")
  p.add_argument("--json", action="store_true", help="print the report as JSON")
  p.add_argument("--dicom-voi", default="auto", help="DICOM VOI for decoding (as config.dicom_voi)")
  p.set_defaults(func=_audit)

  p = sub.add_parser("split", help="copy one folder per class into stratified TRAIN/VAL(/TEST)")
  p.add_argument("src", help="source folder with one sub-folder per class (left unchanged)")
  p.add_argument("dst", help="new output folder (must not exist or be empty)")
  p.add_argument("--val", type=int, required=True, metavar="N", help="validation images in total")
  p.add_argument("--seed", type=_seed, required=True, help="random seed (same seed, same split)")
  p.add_argument("--test", type=int, default=0, metavar="N",
                 help="test images in total (default 0)")
  p.add_argument("--folds", type=int, default=0, metavar="K",
                 help="also give TRAIN images K stratified cross-validation folds (manifest.csv)")
  p.add_argument("--group-by", choices=["patient_id", "folder"],
                 help="keep each patient's images in one split and fold: by DICOM PatientID, or "
                      "by the sub-folder of the class folder (<class>/<patient>/...)")
  p.set_defaults(func=_split)

  p = sub.add_parser("augment-preview", help="PNG grid of one image and its training augmentations")
  p.add_argument("data_dir", nargs="?", help="dataset folder; its first training image is shown")
  p.add_argument("--out", required=True, help="PNG file to write")
  p.add_argument("--image", help="show this image instead of the first training image")
  p.add_argument("--n", type=int, help="number of augmented versions (default 8)")
  p.add_argument("--seed", type=_seed, help="augmentation seed (default: the config's seed)")
  p.add_argument("--config", default="default",
                 help="config whose augmentation is shown (default: configs/default.py); "
                      "--config.NAME=VALUE overrides as for train")
  p.set_defaults(func=_augment_preview)

  p = sub.add_parser(
      "train", help="train (or resume) a model; settings as --config.NAME=VALUE",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Trains per a config file, resuming from the workdir's latest checkpoint.\n"
                  "Every setting, with its meaning and default, is in configs/default.py;\n"
                  "override any of them as --config.NAME=VALUE (nested: --config.augment.zoom_range=0.1).",
      epilog="Example: radjax train --config configs/hello_world.py --workdir runs/hello \\\n"
             "          --config.data_dir=DATA --config.num_epochs=5")
  _config_argument(p)
  p.add_argument("--workdir", required=True, help="run folder: checkpoints, metrics, curves")
  p.set_defaults(func=_train)

  p = sub.add_parser(
      "prepare", help="decode a dataset once into a TFDS dataset on disk, streamed when large",
      description="Lists DATA (class folders or a CSV manifest, every split), decodes, resizes "
                  "and quantizes each image as training caches it, and writes OUT as a "
                  "tensorflow-datasets dataset (sharded records, PNG images, labels, indices, "
                  "source paths) plus OUT/radjax.json. `radjax train --config.data_dir=OUT` keeps "
                  "it in memory when it fits --config.cache_mb, else streams it from disk. "
                  "Settings as for train: --config.NAME=VALUE (image_size, resize, resize_method "
                  "and dicom_voi are stored and must match at training).")
  _config_argument(p)
  p.add_argument("data", help="class folders (TRAIN/, VAL/, TEST/) or a CSV manifest")
  p.add_argument("out", help="a new folder to write")
  p.set_defaults(func=_prepare)

  p = sub.add_parser(
      "export-arrays", help="decode a dataset once into a .npz that trains without TensorFlow",
      description="Writes the training pipeline's decoded, resized, quantized images (every "
                  "split) to one .npz file. `radjax train --config.data_dir=FILE.npz "
                  "--config.augment_on=device` then needs no TensorFlow (e.g. on a GPU machine). "
                  "Settings as for train: --config.NAME=VALUE (image_size, resize, "
                  "resize_method and dicom_voi are stored and must match at training).")
  _config_argument(p)
  p.add_argument("--out", required=True, help="the .npz file to write")
  p.set_defaults(func=_export_arrays)

  p = sub.add_parser(
      "cv", help="stratified k-fold cross-validation; each fold a resumable training run",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Cross-validates a config over every labelled image (TRAIN/ and VAL/ pooled,\n"
                  "or one folder per class; TEST/ is left out). Duplicates and one patient's\n"
                  "images stay in one fold. Rerunning continues unfinished folds.\n"
                  "Settings as for train: --config.NAME=VALUE.",
      epilog="Example: radjax cv --config hello_world --workdir runs/cv --folds 5 \\\n"
             "          --config.data_dir=DATA --config.weights=none")
  _config_argument(p)
  p.add_argument("--workdir", required=True, help="folder for the fold runs and the summary")
  p.add_argument("--folds", type=int, default=0, metavar="K",
                 help="number of folds (with --manifest: its folds)")
  p.add_argument("--seeds", type=int, default=1, metavar="S",
                 help="repeat with S seeds (config.seed, +1, ...): new folds and training seed; "
                      "mean and sd over seeds (default 1)")
  p.add_argument("--manifest", metavar="CSV",
                 help="use the folds of a `radjax split --folds` manifest.csv instead")
  p.set_defaults(func=_cv)

  p = sub.add_parser("evaluate", help="metrics, confusion matrix and ROC of a trained run")
  p.add_argument("--workdir", required=True, help="the training run's folder")
  p.add_argument("--data", help="dataset folder (default: the one the run trained on)")
  p.add_argument("--split", default="val", help="val (default) or test")
  p.add_argument("--checkpoint", default="best", help="best (default), latest or an epoch")
  p.add_argument("--out", help="folder for metrics.json, roc.png and calibration.png "
                                "(default: the workdir)")
  p.add_argument("--target-sensitivity", type=float, metavar="S",
                 help="on VAL, choose the operating point (a multilabel run: each label's) as "
                      "the highest threshold whose sensitivity reaches S (default: Youden's J)")
  p.set_defaults(func=_evaluate)

  from radjax.data.perturb import FAMILY_NAMES  # numpy only: --help stays quick

  p = sub.add_parser("stress", help="how decisions change when films are framed or acquired "
                                    "otherwise (bands, text, markers, gamma, noise, JPEG...)")
  p.add_argument("--workdir", required=True, help="the training run's folder")
  p.add_argument("--data", help="dataset folder (default: the one the run trained on)")
  p.add_argument("--split", default="val", help="val (default) or test")
  p.add_argument("--checkpoint", default="best", help="best (default), latest or an epoch")
  p.add_argument("--families", default="all", metavar="A,B",
                 help=f"perturbation families (default all: {', '.join(FAMILY_NAMES)})")
  p.add_argument("--seed", type=_seed, default=0, help="seed of the perturbations (default 0)")
  p.add_argument("--out", help="folder for stress.json, stress.png and contact.png "
                                "(default: the workdir)")
  p.set_defaults(func=_stress)

  p = sub.add_parser("predict", help="class probabilities for PNG, JPEG or DICOM files")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="the training run's folder")
  source.add_argument("--model", metavar="EXPORT",
                      help="a folder written by radjax export (needs only JAX and NumPy)")
  p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="images, or folders of images")
  p.add_argument("--checkpoint", default="best", help="best (default), latest or an epoch")
  p.add_argument("--threshold", type=float, metavar="P",
                 help="call the second class (a multilabel run: every label) above probability P "
                      "(default: the operating point(s) radjax evaluate chose on VAL, else 0.5)")
  p.add_argument("--tta", type=int, default=0, metavar="N",
                 help="test-time augmentation: predict N seeded augmented copies of each image "
                      "(the run's augmentation) and report their mean and spread")
  p.add_argument("--seed", type=_seed, default=0, help="seed of the --tta copies (default 0)")
  output = p.add_mutually_exclusive_group()
  output.add_argument("--json", action="store_true", help="print JSON instead of lines")
  output.add_argument("--csv", metavar="FILE", help="also write the predictions as CSV")
  p.set_defaults(func=_predict)

  p = sub.add_parser("export", help="a checkpoint as a portable folder: StableHLO for CPU and "
                                    "CUDA, weights and metadata (radjax.exported loads it)")
  p.add_argument("--workdir", required=True, help="the training run's folder")
  p.add_argument("--checkpoint", default="best", help="best (default), latest or an epoch")
  p.add_argument("--out", required=True, help="the export folder to write (new or empty), e.g. "
                                               "model.radjax")
  p.set_defaults(func=_export)

  p = sub.add_parser("serve", help="a local web page: drop PNG, JPEG or DICOM files, see each "
                                   "class' probability, the decision and Grad-CAM")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="the training run's folder (answers with Grad-CAM)")
  source.add_argument("--model", metavar="EXPORT", help="a folder written by radjax export")
  p.add_argument("--checkpoint", default="best", help="with --workdir: best (default), latest "
                                                      "or an epoch")
  p.add_argument("--host", default="127.0.0.1",
                 help="interface to listen on (default 127.0.0.1: this machine only)")
  p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
  p.add_argument("--max-mb", type=float, default=32, help="largest upload in MB (default 32)")
  p.set_defaults(func=_serve)

  p = sub.add_parser("explain", help="Grad-CAM and occlusion maps of images, as figures")
  p.add_argument("--workdir", required=True, help="the training run's folder")
  p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="images, or folders of images")
  p.add_argument("--out", required=True, help="folder for the figures (NAME.explain.png)")
  p.add_argument("--layer", default="mixed10", help="block for Grad-CAM: mixed0..mixed10 "
                                                    "(default mixed10)")
  p.add_argument("--checkpoint", default="best", help="best (default), latest or an epoch")
  p.add_argument("--class", dest="target_class", metavar="NAME",
                 help="the class whose evidence the maps show (default: each image's predicted "
                      "class)")
  p.set_defaults(func=_explain)
  return parser


def main(argv=None) -> int:
  # Before anything imports TensorFlow: its C++ start-up chatter (CUDA probing) is noise here.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  if args.command in ("train", "cv", "export-arrays", "prepare", "augment-preview"):
    args.overrides = unknown  # --config.NAME=VALUE words, checked against the config
  elif unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  # radjax' own messages at INFO; libraries (Orbax, absl) only when something is wrong.
  logging.basicConfig(format="radjax: %(levelname)s: %(message)s", level=logging.WARNING)
  logging.getLogger("radjax").setLevel(logging.INFO)
  from radjax.errors import UserError  # noqa: E402  (after argparse: --help stays instant)

  try:
    return args.func(args)
  except UserError as e:
    print(f"radjax {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # Ctrl-C: what was saved is kept, and the same command continues it
    again = {"train": "; the same command resumes from the last checkpoint",
             "cv": "; the same command continues with the unfinished folds"}
    print(f"\nradjax {args.command}: interrupted{again.get(args.command, '')}", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
