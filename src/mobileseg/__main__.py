"""``python -m mobileseg`` (what ``torchrun -m mobileseg train ...`` runs)."""

import sys

from mobileseg.cli import main

sys.exit(main())
