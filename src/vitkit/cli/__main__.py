"""``python -m vitkit.cli`` (what ``torchrun ... -m vitkit.cli train`` runs)."""
import sys

from . import main

sys.exit(main())
