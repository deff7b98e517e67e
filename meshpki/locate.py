"""Where each cluster's cacerts secret lives: the one resolver that push,
verify --context and audit share, so a cluster is found the same way by all.

Precedence, highest first (README, "Where a cluster's secret lives"):

- kubeconfig: `--kubeconfig FILE`; else KUBECONFIG (files joined with ':',
  merged like kubectl); else the fleet file's entry for the cluster; else the
  fleet file's `defaults.kubeconfig`; else ~/.kube/config (or, in a pod with
  no kubeconfig at all, the pod's service account).
- context: `--context`; else the fleet file's entry for the cluster; else the
  cluster's name. A context names its cluster through the fleet file, else it
  is the cluster's name.
- namespace and secret name: the option; else the fleet file's defaults;
  else istio-system and cacerts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshpki.config import Fleet, FleetCluster
from meshpki.errors import InputError, KubeError
from meshpki.kube import DEFAULT_NAMESPACE, DEFAULT_SECRET, DEFAULT_TIMEOUT, IN_CLUSTER_CONTEXT, Kubeconfigs, SecretRef
from meshpki.store import validate_cluster_name


@dataclass(frozen=True)
class Options:
    """The connection options as given on the command line (None: not given)."""

    kubeconfig: str | None = None
    namespace: str | None = None
    secret_name: str | None = None
    timeout: float = DEFAULT_TIMEOUT


class Resolver:
    """Turns cluster names and contexts into SecretRefs with one precedence."""

    def __init__(self, fleet: Fleet | None = None, options: Options | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.fleet = fleet or Fleet()
        self.options = options or Options()
        self.environ = os.environ if environ is None else environ
        self.configs = Kubeconfigs()  # every kubeconfig file parsed once for this run

    # -- the parts ---------------------------------------------------------------
    def kubeconfig(self, entry: FleetCluster | None = None) -> str | None:
        """The kubeconfig file for a cluster; None means "KUBECONFIG, else
        ~/.kube/config", which kube.py reads (and merges) like kubectl."""
        if self.options.kubeconfig:
            return self.options.kubeconfig
        if self.environ.get("KUBECONFIG"):
            return None
        if entry is not None and entry.kubeconfig:
            return entry.kubeconfig
        return self.fleet.kubeconfig or None

    def ref(self, cluster: str, context: str | None, entry: FleetCluster | None = None) -> SecretRef:
        return SecretRef(
            cluster=cluster,
            context=context,
            kubeconfig=self.kubeconfig(entry),
            namespace=self.options.namespace or self.fleet.namespace or DEFAULT_NAMESPACE,
            secret_name=self.options.secret_name or self.fleet.secret_name or DEFAULT_SECRET,
            timeout=self.options.timeout,
            configs=self.configs,
        )

    # -- what commands ask for -----------------------------------------------------
    def cluster(self, name: str, context: str | None = None) -> SecretRef:
        """A store cluster, reached through `context` or the fleet file's (else its name)."""
        name = validate_cluster_name(name)
        entry = self.fleet.cluster(name)
        ctx = context or (entry.context if entry else name)
        # The entry's kubeconfig belongs to the entry's context, not to any context.
        return self.ref(name, ctx, entry if entry is not None and entry.context == ctx else None)

    def context(self, context: str) -> SecretRef:
        """A kubeconfig context; its cluster name comes from the fleet file, else it is the context."""
        name = self.fleet.cluster_for_context(context)
        entry = self.fleet.cluster(name)
        return self.ref(name, context, entry if entry is not None and entry.context == context else None)

    def fleet_clusters(self) -> list[SecretRef]:
        """Every cluster of the fleet file, in file order."""
        return [self.ref(c.name, c.context, c) for c in self.fleet.clusters]

    def contexts(self) -> list[str]:
        """Every context of the kubeconfig (--all-contexts)."""
        from meshpki import kube

        return kube.list_contexts(self.kubeconfig(), self.configs)

    def contexts_by_server(self) -> dict[str, str]:
        """API server URL -> the one context of the kubeconfig that reaches it
        (servers that several contexts share are left out; {} without a
        kubeconfig). remote-secret copies the remote's server from its context
        into the primary's secret, so audit finds that context again here."""
        from meshpki import kube

        try:
            servers = kube.context_servers(self.kubeconfig(), self.configs)
        except KubeError:
            return {}
        contexts: dict[str, list[str]] = {}
        for context, server in servers.items():
            contexts.setdefault(server, []).append(context)
        return {server: names[0] for server, names in contexts.items() if len(names) == 1}

    def in_pod(self) -> bool:
        """No kubeconfig file anywhere and a Kubernetes service in the environment:
        kube.Cluster.connect will use the pod's service account."""
        from meshpki.kube import kubeconfig_paths

        paths, explicit = kubeconfig_paths(self.kubeconfig())
        return (not explicit and not any(os.path.exists(p) for p in paths)
                and bool(self.environ.get("KUBERNETES_SERVICE_HOST")))

    def pod(self, cluster_name: str | None) -> SecretRef:
        """The pod's own cluster, through its service account."""
        return SecretRef(cluster_name or IN_CLUSTER_CONTEXT, None, None,
                         self.options.namespace or self.fleet.namespace or DEFAULT_NAMESPACE,
                         self.options.secret_name or self.fleet.secret_name or DEFAULT_SECRET, self.options.timeout,
                         self.configs)

    # -- per command -------------------------------------------------------------
    def for_push(self, cluster: str | None, context: str | None, push_all: bool) -> list[SecretRef]:
        """One CLUSTER and/or --context, or every cluster of the fleet file (--all);
        neither: the kubeconfig's current context, as kubectl users expect."""
        if push_all:
            if cluster or context:
                raise InputError("--all pushes every cluster of the fleet file; do not name a CLUSTER or --context too")
            if not self.fleet.clusters:
                raise InputError("--all needs a fleet file with clusters (--config or MESHPKI_CONFIG; "
                                 "see samples/mesh.yaml)")
            return self._one_secret_each(self.fleet_clusters())
        if cluster:
            return [self.cluster(cluster, context)]
        if not context:  # like kubectl: the kubeconfig's current context
            from meshpki import kube

            try:
                context = kube.current_context(self.kubeconfig(), self.configs)
            except KubeError as exc:
                raise InputError(f"name a CLUSTER, a --context, or --all ({exc})") from None
        ref = self.context(context)
        validate_cluster_name(ref.cluster)
        return [ref]

    def _one_secret_each(self, refs: list[SecretRef]) -> list[SecretRef]:
        """Two clusters on one secret would each overwrite the other's CA at every `push --all`."""
        seen: dict[tuple[str | None, ...], str] = {}
        for ref in refs:
            key = (ref.kubeconfig, ref.context, ref.namespace, ref.secret_name)
            if key in seen:
                raise InputError(f"fleet file {self.fleet.path}: {seen[key]} and {ref.cluster} both push to "
                                 f"{ref.where} in context {ref.context}; give each cluster its own `context:`")
            seen[key] = ref.cluster
        return refs

    def for_audit(self, contexts: Sequence[str] = (), all_contexts: bool = False,
                  cluster_name: str | None = None) -> list[SecretRef]:
        """--context/--all-contexts, else the fleet file's clusters, else (inside
        a pod) the pod's own cluster, else none."""
        names = list(dict.fromkeys(contexts))
        if all_contexts:
            names += [c for c in self.contexts() if c not in names]
        if names:
            return [self.context(c) for c in names]
        if self.fleet.clusters:
            return self.fleet_clusters()
        if self.in_pod():
            return [self.pod(cluster_name)]
        return []


def push_commands(fleet: Fleet, clusters: Sequence[str]) -> str:
    """The push command of each cluster, with its context resolved as a push would
    (the fleet file's, else the cluster's name): the "next:" step users copy."""
    commands = []
    for name in clusters:
        known = fleet.cluster(name)
        commands.append(f"meshpki push {name} --context {known.context if known else name}")
    return "; ".join(commands)


def push_everything(fleet: Fleet, clusters: Sequence[str]) -> str:
    """How to push every cluster: `push --all` needs a fleet file that lists them;
    without one, one push command per cluster of the store."""
    if fleet.clusters:
        return "meshpki push --all"
    return push_commands(fleet, clusters) + " (each with its kubeconfig context; a fleet file makes this " \
        "`meshpki push --all`)"
