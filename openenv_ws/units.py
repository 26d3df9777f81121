"""Sizes as operators write them: ``1048576``, ``512K``, ``1M``, ``1.5g``, ``10GiB`` (binary units)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes; raises ``ValueError`` for anything that is not a size."""
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"expected a size such as 1048576, 512K, 1M or 10G, got {text!r}")
    return int(float(match[1]) * (1 << (10 * " kmgt".index(match[2].lower() or " "))))
