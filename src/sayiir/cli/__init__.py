"""The ``sayiir`` command line (``sayiir migrate URL``); see ``sayiir.cli.app``."""

from __future__ import annotations
