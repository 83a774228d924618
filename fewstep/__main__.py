"""`python -m fewstep ...` (what `torchrun -m fewstep train ...` runs)."""

import sys

from fewstep.cli import main

sys.exit(main())
