"""Commands on the root and the intermediates: init-root, issue, rotate,
rotate-root, export-root-key, change-passphrase, revoke, crl, history, demo."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from meshpki.ca import DEFAULT_ROOT_DAYS
from meshpki.cli.console import deliver, emit, print_issued, print_step, progress_printer, say
from meshpki.cli.group import cli
from meshpki.cli.options import (
    BadInput,
    DefaultListGroup,
    MeshGroup,
    Settings,
    connection_options,
    grace_option,
    key_type_choice,
    output_option,
    passphrase_option,
    pkcs11_option,
    profile_options,
    resolve_trust_domain,
    store_options,
    trust_domain_option,
)
from meshpki.cli.secrets import (
    new_root_b_passphrase,
    new_root_passphrase,
    new_root_secret,
    old_root_secret,
    root_passphrase,
    signing_secret,
    token_target,
)
from meshpki.credentials import NEW_PASSPHRASE_ENV
from meshpki.errors import InputError
from meshpki.profiles import DEFAULT_ORG


@cli.command("init-root")
@store_options
@click.option("--key-type", type=key_type_choice(), default="rsa-4096",
              help="Root key type [default: fleet file, else rsa-4096 as in Istio's recipe].")
@click.option("--days", type=int, default=DEFAULT_ROOT_DAYS,
              help=f"Validity in days [default: fleet file, else {DEFAULT_ROOT_DAYS}].")
@click.option("--org", default=DEFAULT_ORG, help=f"Subject organization (O=) [default: fleet file, else {DEFAULT_ORG}].")
@click.option("--cn", default="Root CA", show_default=True, help="Subject common name (CN=).")
@passphrase_option
@click.option("--insecure-no-passphrase", is_flag=True,
              help="Store the root key unencrypted (throw-away stores and tests only).")
@click.option("--import-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="Adopt an existing CA instead of making one: its certificate (with --import-key).")
@click.option("--import-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="The adopted CA's PEM key (plain, or encrypted with the new root passphrase); stored encrypted.")
@click.option("--import-chain", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="For an adopted intermediate: its issuers in order, up to and including the root.")
@click.option("--import-from-context", metavar="CTX", default=None,
              help="Adopt istiod's self-signed root from the live istio-ca-secret of this kubeconfig context.")
@trust_domain_option
@click.option("--constrain", is_flag=True,
              help="Pin the root to the trust domain: a critical nameConstraints extension permitting only "
                   "spiffe://TD identities, so a leaked intermediate cannot mint identities of another mesh.")
@connection_options
@pkcs11_option("Generate the root key inside this PKCS#11 token instead of a file")
@output_option("text", "json")
def init_root_cmd(settings: Settings, key_type: str, days: int, org: str, cn: str,
                  passphrase_file: Path | None, insecure_no_passphrase: bool, import_cert: Path | None,
                  import_key: Path | None, import_chain: Path | None, import_from_context: str | None,
                  trust_domain: str | None, constrain: bool, kubeconfig: str | None, timeout: float,
                  pkcs11: str | None, output: str) -> None:
    """Create the mesh's shared root CA in the store, or adopt an existing CA.

    The key is encrypted at rest (PKCS#8, scrypt + AES-256), or generated inside
    a PKCS#11 token (--pkcs11) that it never leaves. An existing root is never
    overwritten: changing it is `meshpki rotate-root`'s job.

    Adopting (docs/byo-pki.md): --import-cert/--import-key take Istio's
    Makefile root (root-cert.pem, root-key.pem) or any CA; a CA that is not
    self-signed needs --import-chain and then signs cluster CAs as a "mesh CA"
    under that root. --import-from-context takes istiod's own self-signed root,
    so a running single-cluster mesh grows without a moment of broken trust.

    \b
    Examples:
      MESHPKI_ROOT_PASSPHRASE=... meshpki init-root
      meshpki init-root --key-type ecdsa-p256 --days 3650 --passphrase-file pw.txt
      meshpki init-root --import-cert root-cert.pem --import-key root-key.pem
      meshpki init-root --import-cert mesh-ca.pem --import-key mesh-ca.key --import-chain corp-chain.pem
      meshpki init-root --import-from-context cluster1
      MESHPKI_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so \\
        meshpki init-root --pkcs11 'pkcs11:token=meshpki;object=mesh-root' --pin-file pin.txt
      meshpki init-root --trust-domain prod.example --constrain   # root valid only for spiffe://prod.example
    """
    from meshpki import ca, render
    from meshpki.keys import KeyType

    if constrain and (import_cert or import_key or import_chain or import_from_context):
        raise BadInput("--constrain makes a new root; an adopted CA keeps the extensions it has")
    pinned = resolve_trust_domain(settings, trust_domain) if constrain else None
    if import_cert or import_key or import_chain or import_from_context:
        if pkcs11:
            raise BadInput("--pkcs11 makes a new key inside the token; an imported CA key is a file (leave one out)")
        _adopt_root(settings, passphrase_file, insecure_no_passphrase, import_cert, import_key, import_chain,
                    import_from_context, kubeconfig, timeout, output)
        return
    chosen = KeyType.parse(key_type)
    ca.check_root_options(days, org, cn)
    settings.store.refuse_existing_root()
    if pkcs11 and (passphrase_file or insecure_no_passphrase):
        raise InputError("--pkcs11 keeps the root key in the token: --passphrase-file and --insecure-no-passphrase "
                         "do not apply")
    token = token_target(pkcs11, f"generating the {chosen.value} root key inside the PKCS#11 token ...")
    passphrase = None if token else new_root_passphrase(passphrase_file, insecure_no_passphrase)
    if not token:
        say(f"generating the {chosen.value} root key{' and encrypting it' if passphrase else ''} ...")
    result = ca.init_root(settings.store, chosen, days, org, cn, passphrase, token, constrain_to=pinned)
    emit(*render.root_view(result, chosen.value, pinned), output)


def _adopt_root(settings: Settings, passphrase_file: Path | None, insecure_no_passphrase: bool,
                import_cert: Path | None, import_key: Path | None, import_chain: Path | None,
                import_from_context: str | None, kubeconfig: str | None, timeout: float, output: str) -> None:
    """init-root's second door: check an existing CA, then store it like a new root."""
    from meshpki import byo, crl, render

    if import_from_context and (import_cert or import_key or import_chain):
        raise BadInput("--import-from-context adopts istiod's root by itself; leave out --import-cert/-key/-chain")
    if not import_from_context and not (import_cert and import_key):
        raise BadInput("adopting a CA needs both --import-cert and --import-key")
    store = settings.store
    store.refuse_existing_root()
    if import_from_context:
        ref = settings.resolver(kubeconfig, "istio-system", byo.ISTIOD_CA_SECRET, timeout).context(import_from_context)
        cert_pem, key_pem = byo.read_istiod_ca(ref)
        chain_pem, what = None, f"context {import_from_context}: {ref.where}"
    else:
        assert import_cert is not None and import_key is not None
        cert_pem, key_pem = import_cert.read_bytes(), import_key.read_bytes()
        chain_pem, what = (import_chain.read_bytes() if import_chain else None), str(import_cert)
    passphrase = new_root_passphrase(passphrase_file, insecure_no_passphrase)
    adopted = byo.check_import(cert_pem, key_pem, chain_pem, what, key_passphrase=passphrase)
    emit(*render.adopted_view(byo.adopt(store, adopted, passphrase), adopted), output)
    if not adopted.chain_above and not crl.may_sign_crls(adopted.cert):  # (an intermediate cannot revoke at all)
        say(f"warning: {adopted.cert.subject.rfc4514_string()} may not sign CRLs (keyUsage without cRLSign): `meshpki revoke` "
            "cannot evict a cluster under it; `meshpki rotate-root begin` moves the mesh to a root that may")


@cli.command("issue")
@store_options
@click.argument("clusters", nargs=-1, required=True)
@profile_options
@click.option("--force", is_flag=True, help="Replace an existing bundle (the old one goes to history).")
@passphrase_option
@output_option("text", "json")
def issue_cmd(settings: Settings, clusters: tuple[str, ...], key_type: str | None, days: int,
              org: str | None, san_dns: tuple[str, ...], force: bool, passphrase_file: Path | None,
              output: str) -> None:
    """Make one intermediate CA bundle per cluster, signed by the store's root.

    Each cluster folder gets exactly ca-cert.pem, ca-key.pem, cert-chain.pem
    and root-cert.pem: what istiod reads from the `cacerts` secret. Keys are
    generated in parallel.

    \b
    Examples:
      meshpki issue cluster1 cluster2
      meshpki issue cluster3 --key-type ecdsa-p256 --days 365
      meshpki issue cluster1 --force         # replace; old bundle kept in history
    """
    from meshpki import rotate
    from meshpki.store import validate_cluster_name

    options = issue_options(key_type, days, org, san_dns)
    store = settings.store
    for name in clusters:
        validate_cluster_name(name)
        if not force:
            store.refuse_existing_bundle(name)
    results = rotate.issue_now(store, clusters, options, signing_secret(store, passphrase_file), replace=force,
                               progress=progress_printer("generating keys"))
    print_issued(results, output, verb="issued")


def issue_options(key_type: str | None, days: int, org: str | None, san_dns: tuple[str, ...]):  # -> ca.IssueOptions
    from meshpki import ca, profiles
    from meshpki.keys import KeyType

    return ca.IssueOptions(key_type=KeyType.parse(key_type) if key_type else None, days=days, org=org,
                           san_dns=san_dns or (profiles.DEFAULT_ISTIOD_SAN,))


@cli.command("rotate")
@store_options
@click.argument("clusters", nargs=-1, required=True)
@profile_options
@click.option("--revoke-previous", is_flag=True,
              help="Also put the replaced intermediate on the root's CRL (reason superseded), in the same step.")
@passphrase_option
@output_option("text", "json")
def rotate_cmd(settings: Settings, clusters: tuple[str, ...], key_type: str | None, days: int,
               org: str | None, san_dns: tuple[str, ...], revoke_previous: bool, passphrase_file: Path | None,
               output: str) -> None:
    """Give clusters a new key and intermediate under the current root.

    The replaced bundle is archived in the store's history (see `meshpki
    history`). During a root rotation the new intermediate is signed by the new
    root. Push the result to make it live. After a suspected leak, pass
    --revoke-previous: the old key must not stay valid for the rest of its
    life; every bundle then carries ca-crl.pem (push --all).

    \b
    Examples:
      meshpki rotate cluster1
      meshpki rotate cluster1 cluster2 --days 365 && meshpki push --all
      meshpki rotate cluster1 --revoke-previous && meshpki push --all
    """
    from meshpki import crl, rotate
    from meshpki.locate import push_commands
    from meshpki.store import validate_cluster_name

    for name in clusters:
        validate_cluster_name(name)
    store = settings.store
    options = issue_options(key_type, days, org, san_dns)
    # revoking signs the roots' CRLs (both roots during a rotation); issuing needs only the signing root
    secret = root_passphrase(store, passphrase_file) if revoke_previous else signing_secret(store, passphrase_file)
    results = rotate.rotate(store, clusters, options, secret,
                            progress=progress_printer("generating keys"), revoke_previous=revoke_previous)
    if revoke_previous:
        say(f"revoked the replaced intermediate(s) of {', '.join(clusters)}; every bundle carries the new ca-crl.pem")
        for note in crl.site_notes(store):
            say(note)
    # a revocation changes every bundle's ca-crl.pem: every cluster needs the push
    push = settings.push_everything() if revoke_previous else push_commands(settings.fleet, clusters)
    print_issued(results, output, verb="rotated", next_step=f"next: {push}")


@cli.group("rotate-root", cls=MeshGroup)
def rotate_root_group() -> None:
    """Change the mesh's root with no moment where clusters stop trusting each other.

    Push every cluster after each step that changes bundles: `push --all` with a
    fleet file that lists the clusters and their contexts (samples/mesh.yaml),
    else one `push CLUSTER --context CTX` per cluster; each step prints them.

    \b
    The runbook:
      meshpki rotate-root begin      # new root B; every cluster trusts A+B
      meshpki push --all             # then each site signed from a CSR: csr, sign, complete, push
      meshpki rotate-root reissue    # intermediates re-issued under B, still trusting A+B
      meshpki push --all
      meshpki rotate-root status     # wait out the grace period (a workload cert lifetime)
      meshpki rotate-root finish     # every cluster trusts B alone; B becomes the root
      meshpki push --all
    """


@rotate_root_group.command("begin")
@store_options
@click.option("--key-type", type=key_type_choice(), default=None,
              help="New root key type [default: fleet file, else the current root's].")
@click.option("--days", type=int, default=DEFAULT_ROOT_DAYS,
              help=f"New root validity in days [default: fleet file, else {DEFAULT_ROOT_DAYS}].")
@passphrase_option
@click.option("--new-passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"Encrypt the new root's key with the passphrase in this file [else env {NEW_PASSPHRASE_ENV}, "
                   "else the current root's passphrase].")
@pkcs11_option("Generate the new root's key inside this PKCS#11 token")
@output_option("text", "json")
def rotate_root_begin(settings: Settings, key_type: str | None, days: int,
                      passphrase_file: Path | None, new_passphrase_file: Path | None, pkcs11: str | None,
                      output: str) -> None:
    """Make the new root B; every cluster's root-cert.pem becomes A + B.

    A's PEM is kept byte for byte at the head (istiod compares bytes).
    Intermediates are unchanged. Safe to run again: it resumes. B's key may
    live elsewhere than A's: a new passphrase, or a PKCS#11 token.

    \b
    Examples:
      meshpki rotate-root begin
      meshpki rotate-root begin --new-passphrase-file new-pw.txt
      meshpki rotate-root begin --pkcs11 'pkcs11:token=meshpki;object=mesh-root-2026' --pin-file pin.txt
    """
    from meshpki import ca, crl, rotate
    from meshpki.keys import KeyType

    store = settings.store
    ca.check_days(days)
    crl.load_state(store)  # a store that lost crl/state.json: refused before the passphrase prompt (and in begin)
    # resuming may re-sign the CRLs with both roots; a new rotation has only A so far
    passphrase = (root_passphrase if store.has_rotation() else old_root_secret)(store, passphrase_file)
    token = new_passphrase = None
    if not store.has_rotation():  # only a rotation not yet begun makes a key
        token = token_target(pkcs11, "generating the new root key inside the PKCS#11 token ...")
        new_passphrase = None if token else new_root_b_passphrase(store, passphrase_file, new_passphrase_file)
    result = rotate.begin(store, KeyType.parse(key_type) if key_type else None, days, passphrase,
                          org=settings.fleet.org, new_passphrase=new_passphrase, token=token)
    print_step(result, output, "now trusts old + new root",
               f"{settings.push_everything()}, then meshpki rotate-root reissue")


@rotate_root_group.command("reissue")
@store_options
@click.argument("clusters", nargs=-1)
@profile_options
@passphrase_option
@output_option("text", "json")
def rotate_root_reissue(settings: Settings, clusters: tuple[str, ...], key_type: str | None, days: int,
                        org: str | None, san_dns: tuple[str, ...], passphrase_file: Path | None,
                        output: str) -> None:
    """New intermediates under the new root (default: every cluster not yet done).

    root-cert.pem stays old + new; cert-chain.pem becomes new intermediate + new root.
    A cluster signed from a CSR keeps its key at its site: it is named with the
    steps that re-sign it (csr there, sign here, complete and push there).
    """
    from meshpki import render, rotate
    from meshpki.store import validate_cluster_name

    for name in clusters:
        validate_cluster_name(name)
    store = settings.store
    results, skipped = rotate.reissue(store, clusters, issue_options(key_type, days, org, san_dns),
                                      signing_secret(store, passphrase_file),
                                      progress=progress_printer("generating keys"))
    for name in skipped:
        say(f"{name}: already issues under the new root; unchanged")
    sites = rotate.site_rows(store)
    if not results:
        data, text = render.issued_view([], "reissued", "nothing to reissue: every cluster issues under the new root",
                                        sites)
        emit({**data, "unchanged": skipped}, text, output)
        return
    print_issued(results, output, verb="reissued",
                 next_step=f"next: {settings.push_everything()}, wait the grace period, "
                           "then meshpki rotate-root finish", sites=sites)


@rotate_root_group.command("finish")
@store_options
@grace_option("How long after the last reissue (or its push) workloads may still hold old-chain certs.")
@click.option("--force", is_flag=True, help="Skip the grace period wait (workloads with old certs lose mTLS).")
@output_option("text", "json")
def rotate_root_finish(settings: Settings, grace: dt.timedelta, force: bool, output: str) -> None:
    """Trust the new root alone; it becomes the store's root, the old one goes to history.

    Refused while any cluster, or any site signed from a CSR, still issues
    under the old root, and until the grace period has passed.
    """
    from meshpki import rotate

    result = rotate.finish(settings.store, grace, force=force)
    print_step(result, output, "now trusts the new root only", settings.push_everything())


@rotate_root_group.command("status")
@store_options
@grace_option("Grace period used to compute when finish may run.")
@output_option("text", "json")
def rotate_root_status(settings: Settings, grace: dt.timedelta, output: str) -> None:
    """The rotation's phase, and per cluster which root issues it and which it trusts.

    Sites signed from a CSR are read from the inventory, each with what it still has to do.
    """
    from meshpki import render, rotate

    report = rotate.status(settings.store, grace)
    emit(report.to_dict(), render.rotation_status_text(report), output)


@cli.command("export-root-key")
@store_options
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The file to create (never overwritten), mode 0600.")
@click.option("--new-root", is_flag=True, help="Export the new root's key of a rotation under way instead.")
@passphrase_option
@output_option("text", "json")
def export_root_key_cmd(settings: Settings, out: Path, new_root: bool, passphrase_file: Path | None,
                        output: str) -> None:
    """Write the root key as encrypted PKCS#8 that `openssl pkey -passin` opens.

    For disaster recovery and migration: PBES2 with PBKDF2-HMAC-SHA256 (600,000
    rounds) and AES-256-CBC under the key's own passphrase; the store's scrypt
    encryption is stronger but OpenSSL cannot open it. The file is new, 0600,
    and holds the mesh's root key: keep it offline. A root key inside a
    PKCS#11 token cannot be exported.

    \b
    Examples:
      meshpki export-root-key --out /media/offline/mesh-root-key.pem
      openssl pkey -in /media/offline/mesh-root-key.pem -passin file:pw.txt -noout
    """
    from meshpki import render, rootkey

    store = settings.store
    rootkey.check_exportable(store, out, new_root)
    secret = (new_root_secret if new_root else old_root_secret)(store, passphrase_file)
    folder = store.rotation_dir if new_root else store.root_dir
    export_pw = None if store.key_kind(folder) == "encrypted" else new_root_passphrase(
        passphrase_file, insecure=False, prompt="Passphrase for the exported key")
    result = rootkey.export_root_key(store, out, secret, export_pw, new_root=new_root)
    say(f"warning: {result.path} holds the mesh's {result.which} key: whoever has it and the passphrase can "
        "sign CAs every cluster trusts; keep it offline and delete copies you no longer need")
    emit(*render.exported_key_view(result), output)


@cli.command("change-passphrase")
@store_options
@passphrase_option
@click.option("--new-passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"Read the new passphrase from this file (first line) [else env {NEW_PASSPHRASE_ENV}, else a "
                   "prompt typed twice].")
@output_option("text", "json")
def change_passphrase_cmd(settings: Settings, passphrase_file: Path | None, new_passphrase_file: Path | None,
                          output: str) -> None:
    """Re-encrypt the root key under a new passphrase, atomically.

    The current passphrase comes as always (--passphrase-file, env
    MESHPKI_ROOT_PASSPHRASE, or a prompt); the new one from
    --new-passphrase-file, env MESHPKI_NEW_ROOT_PASSPHRASE, or a prompt typed
    twice, at least 12 characters. During a root rotation the new root's key
    follows when it shared the old passphrase.

    \b
    Examples:
      meshpki change-passphrase --passphrase-file old.txt --new-passphrase-file new.txt
    """
    from meshpki import render, rootkey

    store = settings.store
    rootkey.check_changeable(store)
    old = old_root_secret(store, passphrase_file)
    new = new_root_passphrase(new_passphrase_file, insecure=False, env=NEW_PASSPHRASE_ENV,
                              option="--new-passphrase-file", prompt="New root key passphrase")
    assert new is not None  # insecure=False never yields None
    result = rootkey.change_passphrase(store, old, new)
    for note in result.notes:
        say(note)
    emit(*render.passphrase_changed_view(result), output)


REVOKE_REASONS = ("key-compromise", "superseded", "cessation-of-operation")  # crl.REASONS, without importing it


@cli.command("revoke")
@store_options
@click.argument("cluster")
@click.option("--reason", type=click.Choice(REVOKE_REASONS), default="key-compromise", show_default=True,
              help="The CRL reason code of the revoked intermediate(s).")
@click.option("--all-history", is_flag=True,
              help="Also revoke every archived intermediate of CLUSTER that is still valid.")
@passphrase_option
@output_option("text", "json")
def revoke_cmd(settings: Settings, cluster: str, reason: str, all_history: bool, passphrase_file: Path | None,
               output: str) -> None:
    """Evict CLUSTER from the mesh: its intermediate goes on the root's CRL.

    Its bundle leaves the members (kept in history), so verify, push --all and
    audit stop treating it as one. From the first revocation on, every
    member's bundle carries ca-crl.pem: the root's CRL plus a CRL signed by
    its own intermediate, as istiod requires. Signs with the root key, so it
    asks for the root passphrase like issue does.

    \b
    The evict runbook:
      meshpki revoke cluster3                  # CRL; ca-crl.pem in every remaining bundle
      meshpki push --all                       # deliver ca-crl.pem; skips cluster3 (take it out of the fleet file)
      meshpki verify                           # the remaining bundles and pairs, CRLs included
      meshpki audit                            # CRLs' nextUpdate is graded from now on
      meshpki crl renew && meshpki push --all  # before nextUpdate passes (audit warns in time)
    """
    from meshpki import crl, render

    store = settings.store
    store.cluster_dir(cluster)  # a bad name is a usage error before any prompt
    result = crl.revoke(store, cluster, root_passphrase(store, passphrase_file), reason=reason,
                        all_history=all_history)
    for note in result.notes:
        say(note)
    emit(*render.revoked_view(cluster, result, settings.push_everything()), output)


@cli.group("crl", cls=MeshGroup)
def crl_group() -> None:
    """Keep the mesh's CRLs fresh and list what is revoked.

    A CRL whose nextUpdate has passed makes proxies reject every peer: renew
    before then (meshpki audit warns --warn-days ahead) and push --all. A
    cluster signed from a CSR gets them by crl export (root holder), then crl
    refresh (its site).
    """


@crl_group.command("renew")
@store_options
@click.option("--days", type=int, default=None,
              help="Days until the new nextUpdate [default: the last renewal's, else 90; audit warns 30 days ahead].")
@passphrase_option
@output_option("text", "json")
def crl_renew_cmd(settings: Settings, days: int | None, passphrase_file: Path | None, output: str) -> None:
    """Re-sign every CRL with a new number and nextUpdate; every bundle follows.

    \b
    Examples:
      meshpki crl renew && meshpki push --all
      meshpki crl renew --days 30
    """
    from meshpki import crl, render

    store = settings.store
    crl.refuse_renew_at_site(store)  # before the passphrase prompt
    result = crl.renew(store, root_passphrase(store, passphrase_file), days=days)
    for note in result.notes:
        say(note)
    emit(*render.renewed_view(result, settings.push_everything()), output)


@crl_group.command("export")
@store_options
@click.argument("cluster")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default="-", show_default=True,
              metavar="FILE", help="Where to write the PEM CRLs ('-' for stdout).")
def crl_export_cmd(settings: Settings, cluster: str, out: Path) -> None:
    """At the root holder: the roots' current CRLs for a cluster signed from a CSR.

    Its site cannot take them from `crl renew` (that reaches only the bundles
    this store holds): send the file after every renew or revoke, and the site
    runs `meshpki crl refresh`. No passphrase: the CRLs are already signed.

    \b
    Example (root holder, then site):
      meshpki crl renew && meshpki crl export cluster3 --out cluster3-crl.pem
      meshpki crl refresh cluster3 cluster3-crl.pem && meshpki push cluster3 --context cluster3
    """
    from meshpki import crl

    settings.store.refuse_output(out, "--out")
    where = deliver(out, crl.export_for_site(settings.store, cluster))
    say(f"{cluster}: the roots' CRLs written to {where}; next: the site runs meshpki crl refresh {cluster} FILE")


@crl_group.command("refresh")
@store_options
@click.argument("cluster")
@click.argument("crl_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@output_option("text", "json")
def crl_refresh_cmd(settings: Settings, cluster: str, crl_file: Path, output: str) -> None:
    """At a cluster's site: take the root holder's CRLs, re-sign this site's own.

    For a cluster signed from a CSR: ca-crl.pem becomes the CRLs of FILE
    (`meshpki crl export` at the root holder) plus a new CRL signed by the
    cluster's intermediate with the same number and window, as istiod
    requires. Key and certificates stay as they are. The new file is judged
    like verify judges it before it is written; an older CRL than the bundle
    holds is refused.

    \b
    Example:
      meshpki crl refresh cluster3 cluster3-crl.pem && meshpki push cluster3 --context cluster3
    """
    from meshpki import byo, render
    from meshpki.bundle import read_limited

    try:
        received = read_limited(crl_file)
    except OSError as exc:
        raise BadInput(f"cannot read {crl_file}: {exc.strerror or exc}") from None
    result = byo.refresh_crl(settings.store, cluster, received, str(crl_file))
    emit(*render.crl_refreshed_view(result), output)


@crl_group.command("show")
@store_options
@output_option("text", "json")
def crl_show_cmd(settings: Settings, output: str) -> None:
    """List what is revoked (cluster, serial, reason, date) and every CRL's window."""
    from meshpki import crl
    from meshpki.render import crl_show_text

    report = crl.show(settings.store)
    emit(report.to_dict(), crl_show_text(report), output)


@cli.group("history", cls=DefaultListGroup)
def history_group() -> None:
    """Archived bundles, retired roots and finished root rotations; prune them.

    A replaced bundle keeps its certificates, never its key (docs/store.md says
    how to go back to an older bundle: issue a new one under the same root).

    \b
    Examples:
      meshpki history                  # everything, oldest first
      meshpki history cluster1 -o json
      meshpki history prune --keep 3   # keep the 3 newest of each cluster, of roots, of rotations
    """


@history_group.command("list")
@store_options
@click.argument("cluster", required=False)
@output_option("text", "json")
def history_list(settings: Settings, cluster: str | None, output: str) -> None:
    """List archived bundles (with why each left), retired roots and rotation records."""
    from meshpki import history
    from meshpki.render import history_data, history_text

    rows = history.rows(settings.store, cluster)
    emit(history_data(rows), history_text(rows), output)


@history_group.command("prune")
@store_options
@click.option("--keep", type=click.IntRange(min=0), required=True, metavar="N",
              help="How many of the newest entries to keep for each cluster, for roots and for rotations.")
@output_option("text", "json")
def history_prune(settings: Settings, keep: int, output: str) -> None:
    """Delete all but the N newest archived entries of each kind and cluster."""
    from meshpki import history
    from meshpki.render import pruned_view

    emit(*pruned_view(history.prune(settings.store, keep)), output)


@cli.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build the demo store in this folder and keep it (its root key is NOT encrypted: for trying "
                   "things only), instead of a throw-away one that is deleted at the end.")
@click.option("--key-type", type=key_type_choice(), default="rsa-4096", show_default=True,
              help="Key type for the demo root and intermediates.")
def demo_cmd(keep: Path | None, key_type: str) -> None:
    """Run the main job end to end on a throw-away store, no cluster needed.

    Creates a root, issues cluster1 and cluster2, verifies both bundles and the
    pair, and prints the cacerts manifest `push --dry-run` would apply. The
    store is deleted at the end unless --keep names a folder for it.
    """
    from meshpki import demo, render

    def step(message: str) -> None:
        say(f"==> {message}")

    click.echo(render.demo_text(demo.run(keep, key_type, step)))
