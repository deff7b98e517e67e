"""The fleet file (`--config` / MESHPKI_CONFIG): defaults and the clusters.

It lets `push --all` and `audit` know every cluster and its kubeconfig
context, says which clusters are primaries and which remote clusters each
one's istiod reads (`remotes:`, for `remote-secret --all` and audit), and
saves typing the same key type and validity on every command.
Command-line options always win over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshpki.errors import InputError
from meshpki.keys import KeyType
from meshpki.profiles import validate_trust_domain
from meshpki.store import validate_cluster_name

_DEFAULT_KEYS = {"key_type", "root_days", "days", "org", "kubeconfig", "namespace", "secret_name", "trust_domain"}
_CLUSTER_KEYS = {"name", "context", "kubeconfig", "remotes"}


@dataclass(frozen=True)
class FleetCluster:
    name: str
    context: str
    kubeconfig: str | None = None
    remotes: tuple[str, ...] = ()
    """The clusters this one's istiod reads; a cluster that lists any is a primary."""

    @property
    def primary(self) -> bool:
        return bool(self.remotes)


@dataclass(frozen=True)
class Fleet:
    """What the fleet file says; every field optional so no file means `Fleet()`."""

    key_type: KeyType | None = None
    root_days: int | None = None
    days: int | None = None
    org: str | None = None
    kubeconfig: str | None = None
    namespace: str | None = None
    secret_name: str | None = None
    trust_domain: str | None = None
    clusters: tuple[FleetCluster, ...] = field(default_factory=tuple)
    path: Path | None = None

    def cluster(self, name: str) -> FleetCluster | None:
        return next((c for c in self.clusters if c.name == name), None)

    @property
    def primaries(self) -> tuple[FleetCluster, ...]:
        return tuple(c for c in self.clusters if c.primary)

    def cluster_for_context(self, context: str) -> str:
        """A context maps to its cluster through the fleet file, else it is the cluster name."""
        return next((c.name for c in self.clusters if c.context == context), context)


def load_fleet(path: str | Path | None) -> Fleet:
    if not path:
        return Fleet()
    path = Path(path).expanduser()
    import yaml

    try:
        # libyaml when present: a 1,000-cluster fleet file parses in milliseconds, not seconds
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise InputError(f"fleet file {path} does not exist; check --config or MESHPKI_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read fleet file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"fleet file {path} is not valid YAML{where}; fix the file") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"fleet file {path} must be a mapping with `defaults` and `clusters`")
    return _parse(raw, path)


def _parse(raw: dict[str, Any], path: Path) -> Fleet:
    unknown = set(raw) - {"defaults", "clusters"}
    if unknown:
        raise InputError(f"fleet file {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                         "expected `defaults` and `clusters`")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _DEFAULT_KEYS:
        bad = sorted(set(defaults) - _DEFAULT_KEYS) if isinstance(defaults, dict) else ["defaults"]
        raise InputError(f"fleet file {path}: unknown default(s) {', '.join(bad)}; "
                         f"allowed: {', '.join(sorted(_DEFAULT_KEYS))}")
    clusters = []
    for i, entry in enumerate(raw.get("clusters") or []):
        if not isinstance(entry, dict) or "name" not in entry or set(entry) - _CLUSTER_KEYS:
            raise InputError(f"fleet file {path}: clusters[{i}] needs `name` (and optionally "
                             "`context`, `kubeconfig`, `remotes`), nothing else")
        name = validate_cluster_name(str(entry["name"]))
        remotes = entry.get("remotes") or []
        if not isinstance(remotes, list) or not all(isinstance(r, str) for r in remotes):
            raise InputError(f"fleet file {path}: clusters[{i}].remotes must be a list of cluster names")
        clusters.append(FleetCluster(name, str(entry.get("context") or name), entry.get("kubeconfig"),
                                     tuple(remotes)))
    names = {c.name for c in clusters}
    if len(names) != len(clusters):
        raise InputError(f"fleet file {path}: a cluster name appears twice")
    for c in clusters:
        for remote in c.remotes:
            if remote not in names or remote == c.name:
                why = "is the cluster itself" if remote == c.name else "is not a cluster of this file"
                raise InputError(f"fleet file {path}: {c.name}.remotes names {remote!r}, which {why}; "
                                 "list the other clusters this primary's istiod reads")
    return Fleet(
        key_type=KeyType.parse(str(defaults["key_type"])) if "key_type" in defaults else None,
        root_days=_positive(defaults, "root_days", path),
        days=_positive(defaults, "days", path),
        org=defaults.get("org"),
        kubeconfig=defaults.get("kubeconfig"),
        namespace=defaults.get("namespace"),
        secret_name=defaults.get("secret_name"),
        trust_domain=validate_trust_domain(str(defaults["trust_domain"])) if "trust_domain" in defaults else None,
        clusters=tuple(clusters),
        path=path,
    )


def _positive(defaults: dict[str, Any], key: str, path: Path) -> int | None:
    if key not in defaults:
        return None
    value = defaults[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"fleet file {path}: defaults.{key} must be a positive whole number of days")
    return value
