"""`python -m radjax ...`: the `radjax` command."""

import sys

from radjax.commands.cli import main

sys.exit(main())
