"""`meshpki verify`: resolve targets, check each bundle, then every pair.

A target is a cluster of the store or a folder holding a bundle made by
anything. Pairs are checked whenever two or more targets are given: a mesh
is only as good as its worst pair.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshpki import checks
from meshpki.bundle import Bundle, load_folder
from meshpki.checks import BundleReport, PairReport, Severity
from meshpki.errors import InputError

_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Target:
    """A resolved TARGET: its label in the report and the bundle it names."""

    label: str
    bundle: Bundle
    kind: str  # "cluster" or "folder"


@dataclass(frozen=True)
class VerifyReport:
    results: tuple[BundleReport, ...]
    pairs: tuple[PairReport, ...]

    def _count(self, severity: Severity) -> int:
        return sum(r.count(severity) for r in self.results) + sum(p.count(severity) for p in self.pairs)

    @property
    def errors(self) -> int:
        """Error findings over bundles and pairs: a failing pair counts too."""
        return self._count(Severity.ERROR)

    @property
    def warnings(self) -> int:
        return self._count(Severity.WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def exit_code(self, strict: bool = False) -> int:
        """0 clean (warnings allowed), 1 any error, or any warning under --strict."""
        return 1 if self.errors or (strict and self.warnings) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "results": [r.to_dict() for r in self.results],
            "pairs": [p.to_dict() for p in self.pairs],
        }


def resolve_targets(store, names: Sequence[str], all_clusters: bool = False) -> list[Target]:
    """Store clusters by name (a bare name the store knows wins over a folder
    of the same name), else folders; anything else is a usage error naming it.
    No names and no --all means every cluster of the store."""
    targets: list[Target] = []
    seen: set[str] = set()
    wanted = list(names)
    if all_clusters or not wanted:
        clusters = store.clusters() if store is not None else []
        if not clusters and not wanted:
            where = f" {store.path}" if store is not None else ""
            raise InputError(f"no clusters in store{where}: name a cluster or a bundle folder, or run "
                             "`meshpki issue CLUSTER` first")
        wanted = clusters + [n for n in wanted if n not in clusters]
    for name in wanted:
        if name in seen:
            continue
        seen.add(name)
        if store is not None and _CLUSTER_NAME.match(name) and store.has_cluster(name):
            targets.append(Target(name, store.load_bundle(name), "cluster"))
        elif Path(name).is_dir():
            targets.append(Target(name, load_folder(Path(name), source=name), "folder"))
        else:
            where = f" in store {store.path}" if store is not None else ""
            raise InputError(f"{name}: neither a cluster{where} nor a bundle folder")
    return targets


def verify_targets(targets: Sequence[Target], now: dt.datetime | None = None,
                   warn_days: int = checks.DEFAULT_WARN_DAYS) -> VerifyReport:
    """Check each bundle once (one workload cert each), then every pair with them."""
    results = tuple(checks.check_bundle(t.bundle, now=now, warn_days=warn_days, target=t.label) for t in targets)
    pairs = tuple(checks.check_pair(a, b) for a, b in itertools.combinations(results, 2))
    return VerifyReport(results, pairs)


def run(store, names: Sequence[str], all_clusters: bool = False, now: dt.datetime | None = None,
        warn_days: int = checks.DEFAULT_WARN_DAYS) -> VerifyReport:
    """The whole of `meshpki verify`, minus printing."""
    if warn_days < 0:
        raise InputError(f"--warn-days must be 0 or more, not {warn_days}")
    return verify_targets(resolve_targets(store, names, all_clusters), now=now, warn_days=warn_days)
