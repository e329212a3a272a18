"""Drift: does a live child still hold everything the renderer asked for? Pure.

A child matches when every field of the rendered object is present in the live one with the same value.
Fields the API server adds (defaults, uid, status, managedFields) are not a difference, and quantities
compare by value (the server stores `0.5` as `500m`). The first differing field path is returned, so
the Event that reports the repair names what was changed by hand.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALE = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and (m := _QUANTITY.match(value)):
        try:
            return Decimal(m.group(1)) * _SCALE[m.group(2)]
        except InvalidOperation:
            return None
    return None


def _same(want: Any, have: Any) -> bool:
    if want == have:
        return True
    a, b = _quantity(want), _quantity(have)
    return a is not None and a == b


def difference(want: Any, have: Any, path: str = "") -> str | None:
    """The first path where `have` does not hold `want`, or None when it does."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return path or "."
        for key, value in want.items():
            if key not in have:
                return f"{path}.{key}"
            if (found := difference(value, have[key], f"{path}.{key}")) is not None:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return path
        for i, (a, b) in enumerate(zip(want, have, strict=True)):
            if (found := difference(a, b, f"{path}[{i}]")) is not None:
                return found
        return None
    return None if _same(want, have) else path
