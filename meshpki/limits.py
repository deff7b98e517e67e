"""Bounds on what a user may ask for, and the expiry thresholds verify and audit
share, in a module light enough for the CLI to import.

A root of more than 30 years is a typo, and far larger numbers overflow the
date arithmetic (OverflowError); RFC 5280 Appendix A bounds subject names.
"""

from __future__ import annotations

import datetime as dt

MAX_DAYS = 30 * 365
MAX_NAME_LENGTH = 64  # ub-common-name, ub-organization-name
MIN_TOKEN_TTL = dt.timedelta(minutes=10)  # the shortest TokenRequest the API server grants
TOKEN_TTL_NEVER = "never"  # remote-secret --token-ttl never: a long-lived token Secret

# Expiry thresholds: verify warns and audit says WARNING under DEFAULT_WARN_DAYS
# days left; audit says CRITICAL under DEFAULT_CRIT_DAYS.
DEFAULT_WARN_DAYS = 30
DEFAULT_CRIT_DAYS = 7
