"""A string enumeration that behaves as its value wherever a string is used (``enum.StrEnum`` is Python 3.11+; the
package runs on 3.9 and later)."""

from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    """Members are ``str`` instances equal to their values; ``str()``, ``format()`` and f-strings give the value
    (a plain ``(str, Enum)`` member formats as ``Class.MEMBER`` on Python 3.12 and later)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)
