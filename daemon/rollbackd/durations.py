"""Human durations in config and CLI: ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``, or seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Seconds as a float; raises ValueError naming the bad input."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m or 2h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 30s, 5m or 2h, got {value!r}")
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"expected a duration like 30s, 5m, 2h or 1h30m, got {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Short human form: 45s, 12m, 2h05m, 3d04h."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != int(seconds) else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
