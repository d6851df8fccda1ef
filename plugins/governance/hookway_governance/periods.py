"""Reset periods (``30s 5m 1h 1d 1w 1M 1Y``) and the windows they tile.

A counter's windows are tiled from the moment it was created: with ``1d`` created at 10:00, the
windows are [10:00, 10:00 next day), and so on. Every process computes the same windows from the
same stored start, so several workers agree on when a counter resets. ``m`` is a minute, ``M`` a
calendar month (day clamped: Jan 31 + 1M = Feb 28/29), ``Y`` a calendar year.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

_FIXED = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^(\d+)(s|m|h|d|w|M|Y)$")
FOREVER = math.inf


@dataclass(frozen=True, slots=True)
class Period:
    text: str
    count: int
    unit: str

    @property
    def seconds(self) -> float | None:
        """Length in seconds for fixed units, None for months and years."""
        return self.count * _FIXED[self.unit] if self.unit in _FIXED else None

    def window(self, start: float, now: float) -> tuple[float, float]:
        """The window ``[s, e)`` of the tiling that starts at ``start`` and contains ``now``."""
        seconds = self.seconds
        if seconds is not None:
            if now < start:
                return start, start + seconds
            k = int((now - start) // seconds)
            s = start + k * seconds
            return s, s + seconds
        months = self.count * (12 if self.unit == "Y" else 1)
        if now < start:
            return start, _add_months(start, months)
        # Jump close to the answer, then walk (a month is 28..31 days).
        i = max(int((now - start) // (31 * 86400 * months)) - 1, 0)
        s = _add_months(start, i * months)
        e = _add_months(start, (i + 1) * months)
        while e <= now:
            i += 1
            s, e = e, _add_months(start, (i + 1) * months)
        return s, e


def _add_months(ts: float, months: int) -> float:
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    y, m = divmod(dt.month - 1 + months, 12)
    year, month = dt.year + y, m + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day).timestamp()


_CACHE: dict[str, Period] = {}


def parse(text: str) -> Period:
    """``"1h"`` -> Period; ValueError naming the accepted forms otherwise."""
    found = _CACHE.get(text)
    if found is not None:
        return found
    m = _PATTERN.match(text) if isinstance(text, str) else None
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"invalid reset duration {text!r}: expected a positive number followed by "
                         "s, m (minutes), h, d, w, M (months) or Y, e.g. 30s 5m 1h 1d 1w 1M 1Y")
    period = Period(text, int(m.group(1)), m.group(2))
    _CACHE[text] = period
    return period


def is_valid(text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def human(seconds: float) -> str:
    """``3725`` -> ``"1h 2m"`` for messages."""
    seconds = max(int(math.ceil(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts) or "0s"
