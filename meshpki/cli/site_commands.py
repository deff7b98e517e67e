"""Bring your own PKI across sites: csr (at the cluster), sign (at the root
holder), complete (back at the cluster). docs/byo-pki.md."""

from __future__ import annotations

from pathlib import Path

import click

from meshpki.ca import DEFAULT_INTERMEDIATE_DAYS
from meshpki.cli.console import deliver, emit, say
from meshpki.cli.group import cli
from meshpki.cli.options import (
    BadInput,
    Settings,
    key_type_choice,
    output_option,
    passphrase_option,
    store_options,
)
from meshpki.cli.secrets import (
    signing_secret,
)
from meshpki.profiles import DEFAULT_ORG


@cli.command("csr")
@store_options
@click.argument("cluster")
@click.option("--key-type", type=key_type_choice(), default="rsa-4096",
              help="Key type of the cluster CA [default: fleet file, else rsa-4096].")
@click.option("--org", default=DEFAULT_ORG, help=f"Subject organization [default: fleet file, else {DEFAULT_ORG}].")
@click.option("--san-dns", multiple=True, metavar="NAME",
              help="DNS SAN asked for (repeatable) [default: istiod.istio-system.svc]; the signer decides.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="FILE",
              help="Where to write the PEM certificate request ('-' for stdout).")
@click.option("--force", is_flag=True, help="Replace a request that is already pending (its key is dropped).")
def csr_cmd(settings: Settings, cluster: str, key_type: str, org: str, san_dns: tuple[str, ...],
            out: Path, force: bool) -> None:
    """At a cluster's site: make its CA key here and a request for the root holder.

    The key stays in this store as a pending bundle and never travels; only the
    CSR does. The root holder runs `meshpki sign`, sends back the folder it
    writes, and you finish with `meshpki complete`. Rotating such a cluster is
    the same three steps again (`csr --force` if a request is still pending).
    The key type defaults to the fleet file's, else rsa-4096 (a site store has
    no root whose key type `issue` would follow).

    \b
    Examples (site, then root holder, then site):
      meshpki csr cluster3 --out cluster3.csr
      meshpki sign cluster3.csr --out signed-cluster3/
      meshpki complete cluster3 signed-cluster3/
    """
    from meshpki import byo, profiles
    from meshpki.keys import KeyType

    chosen = KeyType.parse(key_type)
    byo.check_request(cluster, org, san_dns)
    to_file = None if str(out) == "-" else out
    byo.check_csr_out(settings.store, to_file)
    if not force:
        settings.store.refuse_pending(cluster)  # before a word about keys
    say(f"generating the {chosen.value} key of {cluster}'s CA ...")
    result = byo.make_csr(settings.store, cluster, chosen, org, san_dns or (profiles.DEFAULT_ISTIOD_SAN,),
                          replace=force, out=to_file)
    where = str(result.out) if result.out else deliver(out, result.csr_pem)
    say(f"{cluster}: key kept pending in {result.pending} (it never leaves this store); request written to {where}")
    say(f"next: send it to the root holder (meshpki sign {out if where != 'stdout' else 'FILE'} --out DIR), "
        f"then run meshpki complete {cluster} DIR here")


@cli.command("sign")
@store_options
@click.argument("csr_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cluster", default=None, help="Cluster name [default: the L= of the request's subject].")
@click.option("--days", type=int, default=DEFAULT_INTERMEDIATE_DAYS,
              help=f"Validity in days, capped at the signer's expiry [default: fleet file, else "
                   f"{DEFAULT_INTERMEDIATE_DAYS}].")
@click.option("--san-dns", multiple=True, metavar="NAME",
              help="DNS SAN of the cluster CA (repeatable) [default: istiod.istio-system.svc]; never the CSR's.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, metavar="DIR",
              help="Folder for ca-cert.pem, cert-chain.pem and root-cert.pem (made if missing; must hold none).")
@passphrase_option
@output_option("text", "json")
def sign_cmd(settings: Settings, csr_file: Path, cluster: str | None, days: int, san_dns: tuple[str, ...],
             out: Path, passphrase_file: Path | None, output: str) -> None:
    """At the root holder: sign a cluster's certificate request.

    The request's signature, key type and strength, and cluster name are
    checked; the cluster CA is issued with meshpki's own profile (nothing but
    the key and the name comes from the request). The store keeps an inventory
    of what it signed (certificates only); no key and no bundle is made here.
    During a root rotation the new root signs and root-cert.pem is old + new,
    as for `issue`; that is how a site follows `meshpki rotate-root`.

    \b
    Example:
      meshpki sign cluster3.csr --out signed-cluster3/
    """
    from meshpki import byo, profiles, render, rotate

    try:
        pem = csr_file.read_bytes()[: byo.MAX_CSR_BYTES + 1]
    except OSError as exc:
        raise BadInput(f"cannot read {csr_file}: {exc.strerror or exc}") from None
    store = settings.store
    byo.read_csr(pem, str(csr_file))  # a bad request is refused before the passphrase is asked
    byo.check_out(store, out)  # before the passphrase
    result = rotate.sign_now(store, pem, str(csr_file), signing_secret(store, passphrase_file), out,
                             cluster=cluster, days=days, san_dns=san_dns or (profiles.DEFAULT_ISTIOD_SAN,))
    for warning in result.warnings:
        say(f"warning: {warning}")
    emit(*render.signed_view(result), output)


@cli.command("complete")
@store_options
@click.argument("cluster")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@output_option("text", "json")
def complete_cmd(settings: Settings, cluster: str, folder: Path, output: str) -> None:
    """At a cluster's site: finish the bundle from what the root holder signed.

    Checks that ca-cert.pem carries this store's pending key and that the
    chain leads to a root of root-cert.pem, then writes the four cacerts files
    in one atomic step (an older bundle goes to history).

    \b
    Example:
      meshpki complete cluster3 signed-cluster3/ && meshpki verify cluster3
    """
    from meshpki import byo, render

    archived = byo.complete(settings.store, cluster, folder)
    emit(*render.completed_view(cluster, settings.store.cluster_dir(cluster), archived), output)
