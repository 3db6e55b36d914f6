"""``python -m vitkit.serve RUN|hf:ID [...]``: the same as ``vitkit serve``."""
import sys

from ..cli.serve import main

sys.exit(main())
