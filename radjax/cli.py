"""`radjax` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import sys


def _convert_weights(args) -> int:
  from radjax import weights

  variables = weights.keras_h5_to_variables(args.keras_h5)
  out = weights.save_variables(variables, args.out_dir)
  n = sum(int(x.size) for x in __import__("jax").tree.leaves(variables))
  print(f"Converted {args.keras_h5} -> {out} ({n:,} values: params + BatchNorm statistics)")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="radjax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("convert-weights", help="Keras InceptionV3 notop .h5 -> Orbax checkpoint")
  p.add_argument("keras_h5", help="Keras legacy HDF5 weights file (include_top=False)")
  p.add_argument("out_dir", help="directory to write the Orbax checkpoint to")
  p.set_defaults(func=_convert_weights)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  from radjax.errors import UserError  # noqa: E402  (after argparse: --help stays instant)

  try:
    return args.func(args)
  except UserError as e:
    print(f"radjax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
