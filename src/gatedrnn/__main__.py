"""``python -m gatedrnn`` is the ``gatedrnn`` command (and what ``torchrun -m gatedrnn`` runs)."""

import sys

from gatedrnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
