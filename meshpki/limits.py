"""Bounds on what a user may ask for, in a module light enough for cli.py to import.

A root of more than 30 years is a typo, and far larger numbers overflow the
date arithmetic (OverflowError); RFC 5280 Appendix A bounds subject names.
"""

from __future__ import annotations

MAX_DAYS = 30 * 365
MAX_NAME_LENGTH = 64  # ub-common-name, ub-organization-name
