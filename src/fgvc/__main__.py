"""``python -m fgvc`` (also what ``torchrun -m fgvc`` runs)."""

import sys

from .cli import main

sys.exit(main())
