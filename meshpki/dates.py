"""Dates and durations: one format for machines, one for people, one parser each.

Every moment meshpki prints is UTC. `iso` is what JSON, annotations and
tables carry; `readable` is what sentences in findings and reasons carry.
"""

from __future__ import annotations

import datetime as dt
import re

from meshpki.errors import InputError
from meshpki.limits import MAX_DAYS

DAY = dt.timedelta(days=1)
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def iso(moment: dt.datetime) -> str:
    """2026-06-01T12:00:00Z"""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def readable(moment: dt.datetime) -> str:
    """2026-06-01 12:00 UTC"""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_moment(text: str) -> dt.datetime:
    """An ISO date (midnight UTC) or date-time; without an offset it is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_duration(text: str, at_least: dt.timedelta = dt.timedelta(0)) -> dt.timedelta:
    """'24h', '90m', '2d', '1d12h', or plain seconds; more than MAX_DAYS is a typo."""
    if text.isdigit():
        d, h, m, s = 0, 0, 0, int(text)
    else:
        parts = _DURATION.fullmatch(text.strip())
        if not text.strip() or not parts or not any(parts.groups()):
            raise InputError(f"invalid duration {text!r}; use e.g. 24h, 90m, 2d or 1d12h")
        d, h, m, s = (int(g) if g else 0 for g in parts.groups())
    try:
        duration = dt.timedelta(days=d, hours=h, minutes=m, seconds=s)
    except OverflowError:
        duration = dt.timedelta.max
    if duration > dt.timedelta(days=MAX_DAYS):
        raise InputError(f"duration {text!r} is more than 30 years; that is surely a typo")
    if duration < at_least:
        raise InputError(f"duration {text!r} is shorter than {format_duration(at_least)}, the least allowed here")
    return duration


def format_duration(duration: dt.timedelta) -> str:
    """The form parse_duration reads: 1d12h, 2h, 10m."""
    rest = int(duration.total_seconds())
    parts = []
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, seconds)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
