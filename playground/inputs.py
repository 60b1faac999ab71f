"""Values from the wire, checked in one place before any handler uses them.

The widgets only send what they allow, but the API accepts any JSON: text with lone UTF-16 surrogates, NaN or
Infinity for a number, a list where a string goes, nothing at all. Each handler passes what it receives through
`text` or `number`, which return a clean value or raise a UserInputError that says what to send instead.
"""

from __future__ import annotations

import math
from typing import Any

from gpt.errors import UserInputError


def text(value: Any, what: str, max_chars: int | None = None) -> str:
    """A string (None is empty); refused if it is not text, is too long, or holds a lone surrogate."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserInputError(f"the {what} must be text, got {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise UserInputError(f"the {what} has {len(value):,} characters; the limit here is {max_chars:,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserInputError(
            f"the {what} holds an invalid character at position {e.start:,} (a lone surrogate, "
            f"U+{ord(value[e.start]):04X}, which is not Unicode text); remove it, or paste the text again from its "
            "source"
        ) from None
    return value


def number(value: Any, what: str, lo: float | None = None, hi: float | None = None, integer: bool = False) -> Any:
    """A finite number within [lo, hi] (an int when `integer`); refused with a message otherwise."""
    if value is None or value == "":
        raise UserInputError(f"{what} is empty; enter a number")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserInputError(f"{what} must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        raise UserInputError(f"{what} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(x):
        raise UserInputError(f"{what} must be a finite number, got {value!r}")
    if integer and x != int(x):
        raise UserInputError(f"{what} must be a whole number, got {value!r}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        bounds = (
            f"from {lo:g} to {hi:g}"
            if lo is not None and hi is not None
            else f"at least {lo:g}"
            if lo is not None
            else f"at most {hi:g}"
        )
        raise UserInputError(f"{what} must be {bounds}, got {value!r}")
    return int(x) if integer else x
