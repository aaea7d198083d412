"""``python -m sayiir.cli ...`` runs the ``sayiir`` command."""

from __future__ import annotations

import sys

from sayiir.cli.app import main

sys.exit(main())
