"""A pydantic model for the [pydantic] scenario: at module level, so the codec finds it again."""

from __future__ import annotations

import pydantic


class Order(pydantic.BaseModel):
    sku: str
    qty: int
