"""Fine-tuning: which stages of the backbone (stem, mixed0..mixed10) are frozen."""

from __future__ import annotations

from radjax.errors import UserError
from radjax.models.inception_v3 import BLOCKS

# Parameter names of the backbone start with the stage they belong to: "stem_" or "mixedN_".
NUM_STAGES = 1 + len(BLOCKS)


def frozen_stages(fine_tune: str) -> int:
  """How many leading backbone stages (stem, mixed0, ...) are frozen: "all" 0, "head" all,
  "from:mixedN" the stem and mixed0..mixed(N-1)."""
  if fine_tune == "all":
    return 0
  if fine_tune == "head":
    return NUM_STAGES
  if fine_tune.startswith("from:mixed"):
    n = fine_tune.removeprefix("from:mixed")
    if n.isdigit() and int(n) < len(BLOCKS):
      return 1 + int(n)
  raise UserError(f"--config.fine_tune={fine_tune}: expected 'all', 'head' or 'from:mixedN' "
                  f"with N in 0..{len(BLOCKS) - 1}")


def stage_of(unit: str) -> int:
  """Stage index of a backbone unit name: stem_* -> 0, mixedN_* -> N + 1."""
  head = unit.split("_")[0]
  return 0 if head == "stem" else 1 + int(head.removeprefix("mixed"))
