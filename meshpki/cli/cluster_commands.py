"""Commands that talk to clusters: push, verify, audit, remote-secret."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meshpki import dates
from meshpki.cli.console import emit, for_each, progress_printer, say
from meshpki.cli.group import cli
from meshpki.cli.options import (
    MOMENT,
    PUSHGATEWAY_URL,
    TOKEN_TTL,
    Settings,
    connection_options,
    insecure_tls_option,
    kube_options,
    output_option,
    parallel_option,
    resolve_trust_domain,
    secret_options,
    store_options,
    transport_note,
    trust_domain_option,
)
from meshpki.errors import InputError, MeshPKIError
from meshpki.limits import DEFAULT_CRIT_DAYS, DEFAULT_WARN_DAYS, MAX_DAYS, MIN_TOKEN_TTL

if TYPE_CHECKING:
    from meshpki.render import Block


@cli.command("push")
@store_options
@click.argument("cluster", required=False)
@kube_options
@click.option("--all", "push_all", is_flag=True, help="Push every cluster of the fleet file, each to its context.")
@secret_options
@click.option("--format", "form", type=click.Choice(["files", "tls"]), default="files", show_default=True,
              help="files: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem; tls: tls.crt, tls.key, ca.crt.")
@click.option("--dry-run", is_flag=True, help="Plan only; with -o yaml print the manifest (works offline too).")
@click.option("--allow-root-change", is_flag=True,
              help="Push even when the live secret trusts roots that share nothing with ours (splits the mesh).")
@click.option("--replace-other-cluster", is_flag=True,
              help="Push even when the live secret holds another cluster's intermediate (its L= names it).")
@click.option("--allow-untrusted-by-peers", is_flag=True,
              help="During a root rotation, push an intermediate under the new root before every other cluster "
                   "trusts it (their mTLS with this cluster fails until they are pushed).")
@trust_domain_option
@insecure_tls_option
@parallel_option
@output_option("text", "yaml", "json")
def push_cmd(settings: Settings, cluster: str | None, context: str | None, kubeconfig: str | None,
             timeout: float, push_all: bool, namespace: str | None, secret_name: str | None, form: str,
             dry_run: bool, allow_root_change: bool, replace_other_cluster: bool, allow_untrusted_by_peers: bool,
             trust_domain: str | None, insecure_tls: bool, parallel: int, output: str) -> None:
    """Write a cluster's bundle as the `cacerts` secret, safely and idempotently.

    Verifies the bundle (for --trust-domain) and that the store's root signed
    it, reads the live secret, refuses another cluster's secret and a change of
    roots istiod would not take (the new roots must be a subset or a superset
    of the live ones), and during a root rotation an intermediate under the new
    root while another cluster does not trust it; keeps the live secret's type and a live
    ca-crl.pem that still fits the new chain (refuses one that does not),
    writes with optimistic concurrency, reads back and compares byte for byte.
    An unchanged bundle writes nothing. With --all, --parallel clusters are
    pushed at once; each prints one block, in fleet order, and a failing
    cluster does not stop the others (exit 1 at the end).

    \b
    Examples:
      meshpki push --context cluster1                 # bundle "cluster1" to context cluster1
      meshpki push                                    # the kubeconfig's current context
      meshpki push cluster2 --context kind-cluster2
      meshpki push --all --config samples/mesh.yaml
      meshpki push --all --parallel 1 -o json         # one cluster after another, a result each
      meshpki push cluster1 --dry-run -o yaml > cacerts.yaml   # GitOps, no cluster needed
    """
    from meshpki import push as pushmod

    resolver = settings.resolver(kubeconfig, namespace, secret_name, timeout)
    targets = resolver.for_push(cluster, context, push_all)
    if not (cluster or context or push_all):
        say(f"no CLUSTER or --context: using the kubeconfig's current context {targets[0].context} "
            f"(cluster {targets[0].cluster})")
    if push_all:
        from meshpki.crl import skip_evicted

        targets, notes = skip_evicted(settings.store, targets)
        for note in notes:
            say(note)
    domain = resolve_trust_domain(settings, trust_domain)
    store = settings.store  # resolved once, before clusters are worked on in threads
    overrides = pushmod.Overrides(allow_root_change, replace_other_cluster, allow_untrusted_by_peers)
    peers = pushmod.PeerTrust(resolver.fleet_clusters())  # one per run: push --all reads each peer once

    def one(target: Any) -> Block:
        from meshpki.render import dry_run_block, push_block

        if dry_run:
            # text output is the plan, which needs the cluster; a manifest does not (GitOps, offline)
            dry = pushmod.dry_run(store, target, overrides, form, domain, offline_ok=output != "text", peers=peers)
            return dry_run_block(dry, output)
        note = transport_note(target.context, target.kubeconfig, insecure_tls, "the CA private key")
        block = push_block(pushmod.push(store, target, overrides, form, domain, peers), output)
        block.err[:0] = [note] if note else []
        return block

    for_each(targets, one, "pushes", output, parallel)


@cli.command("verify")
@store_options
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--all", "all_clusters", is_flag=True,
              help="Verify every cluster in the store (also the default when no TARGET is named).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on errors.")
@click.option("--warn-days", type=click.IntRange(min=0, max=MAX_DAYS), default=DEFAULT_WARN_DAYS, show_default=True,
              help="Warn when a certificate on the path expires within this many days.")
@click.option("--context", "contexts", multiple=True, metavar="CTX",
              help="Verify the live cacerts secret of this kubeconfig context and compare it with the store "
                   "(repeatable); without TARGET only the live secrets, with --all the store's clusters too.")
@connection_options
@secret_options
@trust_domain_option
@output_option("text", "json")
def verify_cmd(settings: Settings, targets: tuple[str, ...], all_clusters: bool, strict: bool, warn_days: int,
               contexts: tuple[str, ...], kubeconfig: str | None, namespace: str | None, secret_name: str | None,
               timeout: float, trust_domain: str | None, output: str) -> None:
    """Check bundles the way istiod and the proxies will, and every pair of them.

    A TARGET is a cluster in the store or a folder holding a bundle made by
    anything (meshpki, Istio's Makefile, samples/certs, cert-manager's
    tls.crt/tls.key/ca.crt). Each file is read as istiod reads it, ca-crl.pem
    included (a CRL signed by every cert of cert-chain.pem; not expired; not
    revoking the bundle's own path). Each bundle signs a throw-away workload
    certificate of --trust-domain that must pass a real mutual-TLS handshake;
    with two or more targets every pair must trust each other. Every finding
    says who objects: istiod, proxy or meshpki (policy). Exit 0: no errors;
    1: errors (or warnings with --strict); 2: a TARGET that is neither a
    cluster nor a folder.

    \b
    Examples:
      meshpki verify                          # every cluster in the store, and all pairs
      meshpki verify cluster1 cluster2 -o json
      meshpki verify ./istio-1.22/samples/certs --strict
      meshpki verify cluster1 /tmp/cacerts-from-cluster3 --warn-days 60
      meshpki verify --context cluster1 --context cluster2   # live secrets, and drift from the store
      meshpki verify --trust-domain prod.example   # a mesh whose root is pinned to prod.example
    """
    from meshpki import verify
    from meshpki.render import verify_text

    resolver = settings.resolver(kubeconfig, namespace, secret_name, timeout)
    live = [resolver.context(ctx) for ctx in contexts]
    report = verify.run(settings.store, targets, all_clusters=all_clusters, warn_days=warn_days, live=live,
                        trust_domain=resolve_trust_domain(settings, trust_domain))
    for note in report.notes:
        say(note)
    emit(report.to_dict(strict), verify_text(report, strict=strict), output)
    code = report.exit_code(strict)
    if code:
        click.get_current_context().exit(code)


@cli.command("audit")
@store_options
@click.option("--context", "contexts", multiple=True, metavar="CTX",
              help="Audit the live cacerts secret of this kubeconfig context (repeatable) [default: the fleet "
                   "file's contexts].")
@click.option("--all-contexts", is_flag=True, help="Audit every context of the kubeconfig.")
@connection_options
@secret_options
@click.option("--cluster-name", envvar="MESHPKI_CLUSTER_NAME", default=None,
              help="Cluster name when running in a pod with its service account [env MESHPKI_CLUSTER_NAME; "
                   "default: in-cluster].")
@click.option("--warn-days", type=click.IntRange(min=0, max=MAX_DAYS), default=DEFAULT_WARN_DAYS, show_default=True,
              help="WARNING when a certificate has fewer than this many days left.")
@click.option("--crit-days", type=click.IntRange(min=0, max=MAX_DAYS), default=DEFAULT_CRIT_DAYS, show_default=True,
              help="CRITICAL when a certificate has fewer than this many days left (or has expired).")
@click.option("--at", type=MOMENT, metavar="DATE", default=None,
              help="Grade as of this date instead of now, e.g. 2027-06-01 or 2027-06-01T12:00:00Z.")
@click.option("--parallel", type=click.IntRange(min=1, max=256), default=64, show_default=True,
              help="Clusters read at the same time.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="Also write the Prometheus exposition here, atomically (node_exporter's textfile collector "
                   "reads *.prom).")
@click.option("--pushgateway", envvar="MESHPKI_PUSHGATEWAY", default=None, metavar="URL", type=PUSHGATEWAY_URL,
              help="Also push the exposition to this Prometheus Pushgateway (job meshpki_audit): metrics from a "
                   "CronJob without a hostPath [env MESHPKI_PUSHGATEWAY].")
@click.option("--public-only", is_flag=True,
              help="Read each cluster's public ConfigMap meshpki-public (certificates and CRL, written by push) "
                   "instead of the cacerts secret: never reads a secret or a key; needs get on that ConfigMap only.")
@trust_domain_option
@output_option("text", "json", "prometheus")
def audit_cmd(settings: Settings, contexts: tuple[str, ...], all_contexts: bool, kubeconfig: str | None,
              timeout: float, namespace: str | None, secret_name: str | None, cluster_name: str | None,
              warn_days: int, crit_days: int, at: dt.datetime | None, parallel: int, textfile: Path | None,
              pushgateway: str | None, public_only: bool, trust_domain: str | None, output: str) -> None:
    """Grade expiry, drift and presence of every CA certificate, for cron and Prometheus.

    Audits the store (every root, every cluster's bundle) when there is one, and
    each cluster's live cacerts secret: the fleet file's contexts by default;
    in a pod with no kubeconfig, its own cluster through the service account.
    CRITICAL: expired or within --crit-days, no cacerts secret, a cacerts
    holding istiod's own self-signed CA (istio-generated), a bundle that
    fails verify, clusters that share no root. WARNING: within --warn-days,
    drift from the store, an intermediate outliving its root, a root that
    expires before its intermediates could be rotated. UNKNOWN: a cluster
    that could not be read within --timeout. Clusters are read in parallel.
    A primary's remote secrets (istio/multiCluster=true) are graded by their
    token's expiry like certificates; a secret for a cluster the fleet file
    does not list, or a fleet `remotes:` entry without one, is a WARNING;
    the reason ends with the remote-secret command that fixes it, as printed.
    Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the most urgent wins:
    CRITICAL, then UNKNOWN, then WARNING).

    \b
    Examples:
      meshpki audit                                  # the store, and the fleet file's clusters
      meshpki audit --context kind-cluster1 --context kind-cluster2 -o json
      meshpki audit --all-contexts --at 2027-06-01   # what will have expired by June 2027
      meshpki audit -o prometheus --textfile /var/lib/node_exporter/textfile/meshpki.prom
      meshpki audit --public-only --pushgateway http://pushgateway.monitoring:9091   # in-cluster CronJob
    """
    from meshpki import audit
    from meshpki.render import OutputFormat, audit_prometheus, render_audit

    audit.check_thresholds(warn_days, crit_days)
    settings.store.refuse_output(textfile, "--textfile")
    try:
        resolver = settings.resolver(kubeconfig, namespace, secret_name, timeout)
        targets = resolver.for_audit(contexts, all_contexts, cluster_name)
        from meshpki.crl import skip_evicted

        targets, notes = skip_evicted(settings.store, targets)
        for note in notes:
            say(note)
        report = audit.run(settings.store, targets, at, warn_days, crit_days, parallel,
                           progress_printer("auditing clusters") if len(targets) > 1 else None,
                           resolve_trust_domain(settings, trust_domain),
                           audit.MeshLayout.of(settings.fleet, resolver.contexts_by_server()),
                           public_only=public_only)
    except InputError:
        raise
    except MeshPKIError as exc:  # the audit could not run: UNKNOWN, not WARNING (exit 1)
        say(f"Error: {exc}")
        click.get_current_context().exit(int(audit.Grade.UNKNOWN))
    for note in report.notes:
        say(note)
    shown = render_audit(report, OutputFormat(output))
    click.echo(shown, nl=not shown.endswith("\n"))
    # --textfile and --pushgateway get the exposition whatever -o printed
    failures = audit.export(lambda: shown if output == "prometheus" else audit_prometheus(report),
                            textfile, pushgateway)
    for failure in failures:
        say(f"Error: {failure}")
    code = audit.exit_code(report, failures)
    if code:
        click.get_current_context().exit(code)


@cli.command("remote-secret")
@store_options
@click.argument("cluster", required=False)
@click.option("--context", default=None, metavar="CTX",
              help="kubeconfig context of the REMOTE cluster [default: the fleet file's, else CLUSTER].")
@click.option("--primary-context", default=None, metavar="CTX",
              help="kubeconfig context of the primary whose istiod reads CLUSTER [default: the fleet file's "
                   "only primary that lists CLUSTER].")
@connection_options
@click.option("--all", "all_remotes", is_flag=True,
              help="Every remote of every primary in the fleet file (`remotes:` of a cluster).")
@click.option("--service-account", default="istio-reader-service-account", show_default=True, metavar="NAME",
              help="Service account in the remote that istiod reads as.")
@click.option("--namespace", default="istio-system", show_default=True,
              help="Namespace of the service account (remote) and of the secret (primary).")
@click.option("--token-ttl", type=TOKEN_TTL, default=None, metavar="DURATION",
              help=f"A TokenRequest token that expires after DURATION (e.g. 90d, 12h; at least "
                   f"{dates.format_duration(MIN_TOKEN_TTL)}), or `never` for a long-lived token Secret "
                   "[default: the kind and lifetime the primary's secret has, else a long-lived token Secret].")
@click.option("--rotate", is_flag=True,
              help="Make a new token (of the kind and lifetime the secret has, unless --token-ttl says "
                   "otherwise), update the primary, then delete the old token Secret.")
@click.option("--token-wait", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the token controller to fill a new token Secret.")
@click.option("--dry-run", is_flag=True,
              help="Write nowhere (needs a token that already exists); with -o yaml|json print the secret.")
@insecure_tls_option
@parallel_option
@output_option("text", "yaml", "json")
def remote_secret_cmd(settings: Settings, cluster: str | None, context: str | None, primary_context: str | None,
                      kubeconfig: str | None, timeout: float, all_remotes: bool, service_account: str,
                      namespace: str, token_ttl: dt.timedelta | str | None, rotate: bool, token_wait: float, dry_run: bool,
                      insecure_tls: bool, parallel: int, output: str) -> None:
    """Give a primary's istiod read access to a remote cluster.

    In the remote: a service account, a ClusterRole that may only get, list
    and watch what istiod reads, the binding, and a token. In the primary:
    the Secret istio-remote-secret-CLUSTER (label istio/multiCluster=true)
    holding a kubeconfig with that token. Every write is checked with
    dryRun=All first; an unchanged secret writes nothing. A run, --rotate
    too, keeps the secret's kind of token (a TokenRequest token of the same
    lifetime, or a long-lived token Secret) unless --token-ttl changes it.

    \b
    Examples:
      meshpki remote-secret cluster2 --context kind-cluster2 --primary-context kind-cluster1
      meshpki remote-secret cluster2 --context c2 --primary-context c1 --token-ttl 90d
      meshpki remote-secret cluster2 --context c2 --primary-context c1 --rotate   # again 90d
      meshpki remote-secret cluster2 --context c2 --primary-context c1 --token-ttl never
      meshpki remote-secret --all --config samples/mesh.yaml
      meshpki remote-secret cluster2 --context c2 --primary-context c1 --dry-run -o yaml
    """
    from meshpki import remote

    targets = remote.resolve_targets(settings.resolver(kubeconfig, timeout=timeout), cluster, context,
                                     primary_context, all_remotes, timeout=timeout, service_account=service_account,
                                     namespace=namespace, token_ttl=token_ttl, token_wait=token_wait)
    # step-by-step progress only for one cluster on a terminal: several at once would interleave
    live_progress = len(targets) == 1 and sys.stderr.isatty()

    def one(target: Any) -> Block:
        notes = [transport_note(ctx, cfg, insecure_tls, "a service-account token")
                 for ctx, cfg in ((target.context, target.kubeconfig), (target.primary_context, target.primary_kubeconfig))]
        block = _remote_secret_one(target, rotate, dry_run, output, live_progress)
        block.err[:0] = [n for n in notes if n]
        return block

    for_each(targets, one, "remote secrets", output, parallel)


def _remote_secret_one(target, rotate: bool, dry_run: bool, output: str, live_progress: bool) -> Block:
    from meshpki import remote
    from meshpki.render import remote_secret_block

    result = remote.remote_secret(target, rotate=rotate, dry_run=dry_run, progress=say if live_progress else None)
    return remote_secret_block(target, result, output)
