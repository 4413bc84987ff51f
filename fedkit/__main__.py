"""``python -m fedkit`` runs the CLI."""

import sys

from fedkit.cli import main

sys.exit(main())
