"""A string enumeration that behaves as its value wherever a string is used (``enum.StrEnum`` is Python 3.11+; the
package runs on 3.9 and later)."""

from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    """Members are ``str`` instances equal to their values; ``str()``, ``format()`` and f-strings give the value
    (a plain ``(str, Enum)`` member formats as ``Class.MEMBER`` on Python 3.12 and later)."""

    __str__ = str.__str__
    __format__ = str.__format__
