"""Placeholder: the lead replaces this with the real quick-start workflow."""

from __future__ import annotations

print("placeholder")
