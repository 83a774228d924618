"""`python -m fewstep_cli ...` (what `torchrun -m fewstep_cli train ...` runs)."""

import sys

from fewstep_cli.main import main

sys.exit(main())
