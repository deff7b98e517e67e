"""The command line: parse, call one library function, render. Nothing more.

Only this module imports click. Library code raises MeshPKIError subclasses;
`MeshGroup.invoke` turns them into one clear line and exit 1 (InputError:
exit 2), so no traceback ever reaches a user.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from meshpki import __version__
from meshpki.errors import InputError, MeshPKIError, PassphraseError

PASSPHRASE_ENV = "MESHPKI_ROOT_PASSPHRASE"


class BadInput(click.ClickException):
    """A usage error in one line: exit 2 like click's own, without the usage banner."""

    exit_code = 2


class MeshGroup(click.Group):
    """Turns library errors into click's own, so exit codes stay uniform."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            raise BadInput(str(exc)) from None
        except MeshPKIError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; nothing half-written was left behind") from None


# -- shared options --------------------------------------------------------

class Settings:
    """The store and fleet file every command may use, resolved lazily."""

    def __init__(self, store: Path | None, config: Path | None) -> None:
        self._store_path = store
        self._config_path = config

    @functools.cached_property
    def fleet(self):  # -> config.Fleet
        from meshpki.config import load_fleet

        return load_fleet(self._config_path)

    @functools.cached_property
    def store(self):  # -> store.Store
        from meshpki.store import Store, default_store_path

        return Store(self._store_path or default_store_path())


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--store and --config on every command, handed over as one `settings`."""

    @click.option("--store", "store_path", envvar="MESHPKI_STORE", metavar="DIR",
                  type=click.Path(file_okay=False, path_type=Path),
                  help="The meshpki store folder [env MESHPKI_STORE; default ~/.local/share/meshpki].")
    @click.option("--config", "config_path", envvar="MESHPKI_CONFIG", metavar="FILE",
                  type=click.Path(dir_okay=False, path_type=Path),
                  help="Fleet file with defaults and clusters, e.g. samples/mesh.yaml [env MESHPKI_CONFIG].")
    @functools.wraps(func)
    def wrapper(*args: Any, store_path: Path | None, config_path: Path | None, **kwargs: Any) -> Any:
        return func(*args, settings=Settings(store_path, config_path), **kwargs)

    return wrapper


def passphrase_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"Read the root key passphrase from this file (first line) [else env {PASSPHRASE_ENV}, "
             "else a prompt on a terminal].")(func)


def output_option(*formats: str, default: str = "text") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("-o", "--output", "output", type=click.Choice(formats), default=default,
                        show_default=True, help="Output format for the data this command prints.")


def key_type_choice() -> click.Choice:
    from meshpki.keys import KeyType

    return click.Choice([k.value for k in KeyType], case_sensitive=False)


# -- passphrases -------------------------------------------------------------

def _passphrase_from_sources(passphrase_file: Path | None) -> bytes | None:
    if passphrase_file is not None:
        lines = passphrase_file.read_bytes().splitlines()
        if not lines or not lines[0]:
            raise PassphraseError(f"passphrase file {passphrase_file} is empty")
        return lines[0]
    env = os.environ.get(PASSPHRASE_ENV)
    return env.encode() if env else None


def new_root_passphrase(passphrase_file: Path | None, insecure: bool) -> bytes | None:
    """A passphrase for a new root key: file, env, or typed twice; never silently none."""
    if insecure:
        return None
    found = _passphrase_from_sources(passphrase_file)
    if found:
        return found
    if sys.stdin.isatty():
        typed = click.prompt("Passphrase for the new root key", hide_input=True,
                             confirmation_prompt=True, err=True)
        if typed:
            return typed.encode()
    raise PassphraseError(
        f"the root key must be encrypted: set {PASSPHRASE_ENV}, pass --passphrase-file, run on a terminal, "
        "or say --insecure-no-passphrase"
    )


def root_passphrase(store, passphrase_file: Path | None) -> bytes | None:
    """The passphrase to unlock the store's root key, when it needs one."""
    if not store.root_key_encrypted():
        return None
    found = _passphrase_from_sources(passphrase_file)
    if found:
        return found
    if sys.stdin.isatty():
        return click.prompt("Root key passphrase", hide_input=True, err=True).encode()
    raise PassphraseError(f"the root key is encrypted: set {PASSPHRASE_ENV}, pass --passphrase-file, "
                          "or run on a terminal")


# -- progress and messages -----------------------------------------------------

def say(message: str) -> None:
    """Messages go to stderr; stdout is for data."""
    click.echo(message, err=True)


def progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A one-line counter on a terminal; silence in pipes and CI logs."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        click.echo(f"\r{label} {done}/{total}", err=True, nl=done == total)

    return show


def emit(data: Any, output: str, text: str) -> None:
    from meshpki.render import OutputFormat, render_data

    click.echo(render_data(data, OutputFormat(output), text))


# -- commands ----------------------------------------------------------------

@click.group(cls=MeshGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meshpki")
def cli() -> None:
    """meshpki: one shared root of trust for a multi-cluster Istio mesh.

    Makes the root and one intermediate CA per cluster, verifies the bundles the
    way istiod and the proxies will, pushes them as the `cacerts` secret,
    rotates them without splitting the mesh, and audits expiry.

    \b
    Quick start:
      meshpki demo                          # everything below, in a throw-away store
      meshpki init-root                     # shared root, key encrypted
      meshpki issue cluster1 cluster2       # one intermediate bundle per cluster
    """


@cli.command("init-root")
@store_options
@click.option("--key-type", type=key_type_choice(), default=None,
              help="Root key type [default: fleet file, else rsa-4096 as in Istio's recipe].")
@click.option("--days", type=int, default=None, help="Validity in days [default: fleet file, else 3650].")
@click.option("--org", default=None, help="Subject organization (O=) [default: fleet file, else Istio].")
@click.option("--cn", default="Root CA", show_default=True, help="Subject common name (CN=).")
@passphrase_option
@click.option("--insecure-no-passphrase", is_flag=True,
              help="Store the root key unencrypted (throw-away stores and tests only).")
@output_option("text", "json")
def init_root_cmd(settings: Settings, key_type: str | None, days: int | None, org: str | None, cn: str,
                  passphrase_file: Path | None, insecure_no_passphrase: bool, output: str) -> None:
    """Create the mesh's shared root CA in the store.

    The key is encrypted at rest (PKCS#8, scrypt + AES-256). An existing root is
    never overwritten: changing it is `meshpki rotate-root`'s job.

    \b
    Examples:
      MESHPKI_ROOT_PASSPHRASE=... meshpki init-root
      meshpki init-root --key-type ecdsa-p256 --days 3650 --passphrase-file pw.txt
    """
    from meshpki import ca
    from meshpki.keys import KeyType
    from meshpki.render import cert_facts

    fleet = settings.fleet
    chosen = KeyType.parse(key_type) if key_type else (fleet.key_type or KeyType.RSA_4096)
    days = ca.check_days(days if days is not None else (fleet.root_days or ca.DEFAULT_ROOT_DAYS))
    settings.store.refuse_existing_root()
    passphrase = new_root_passphrase(passphrase_file, insecure_no_passphrase)
    say(f"generating the {chosen.value} root key{' and encrypting it' if passphrase else ''} ...")
    result = ca.init_root(settings.store, chosen, days, org or fleet.org or "Istio", cn, passphrase)
    data = {"path": str(result.path), "key_type": chosen.value, "encrypted": result.encrypted,
            "certificate": cert_facts(result.cert)}
    facts = data["certificate"]
    text = (f"created root CA {facts['subject']} in {result.path}\n"
            f"  serial {facts['serial']}, valid until {facts['not_after']}, key "
            f"{'encrypted' if result.encrypted else 'NOT encrypted'}\n"
            f"  next: meshpki issue CLUSTER...")
    emit(data, output, text)


@cli.command("issue")
@store_options
@click.argument("clusters", nargs=-1, required=True)
@click.option("--key-type", type=key_type_choice(), default=None,
              help="Intermediate key type [default: fleet file, else the root's].")
@click.option("--days", type=int, default=None,
              help="Validity in days, capped at the root's expiry [default: fleet file, else 730].")
@click.option("--org", default=None, help="Subject organization [default: fleet file, else the root's].")
@click.option("--san-dns", multiple=True, metavar="NAME",
              help="DNS SAN of the intermediate (repeatable) [default: istiod.istio-system.svc].")
@click.option("--force", is_flag=True, help="Replace an existing bundle (the old one goes to history).")
@passphrase_option
@output_option("text", "json")
def issue_cmd(settings: Settings, clusters: tuple[str, ...], key_type: str | None, days: int | None,
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
    results = _issue(settings, clusters, key_type, days, org, san_dns, force, passphrase_file)
    _print_issued(results, output, verb="issued")


def issue_options(settings: Settings, key_type: str | None, days: int | None, org: str | None,
                  san_dns: tuple[str, ...]):  # -> ca.IssueOptions
    from meshpki import ca, profiles
    from meshpki.keys import KeyType

    fleet = settings.fleet
    return ca.IssueOptions(
        key_type=KeyType.parse(key_type) if key_type else fleet.key_type,
        days=days if days is not None else (fleet.days or ca.DEFAULT_INTERMEDIATE_DAYS),
        org=org or fleet.org,
        san_dns=san_dns or (profiles.DEFAULT_ISTIOD_SAN,),
    )


def _issue(settings: Settings, clusters: tuple[str, ...], key_type: str | None, days: int | None,
           org: str | None, san_dns: tuple[str, ...], replace: bool, passphrase_file: Path | None):
    from meshpki import ca
    from meshpki.store import validate_cluster_name

    options = issue_options(settings, key_type, days, org, san_dns)
    store = settings.store
    for name in clusters:
        validate_cluster_name(name)
        if not replace:
            store.refuse_existing_bundle(name)
    issuer = ca.store_issuer(store, root_passphrase(store, passphrase_file))
    return ca.issue(store, clusters, options, issuer, replace=replace,
                    progress=progress_printer("generating keys"))


def _print_issued(results, output: str, verb: str) -> None:
    from meshpki.render import cert_facts

    for result in results:
        for warning in result.warnings:
            say(f"warning: {warning}")
    data = {"clusters": [{"cluster": r.cluster, "path": str(r.path),
                          "archived": str(r.archived) if r.archived else None,
                          "certificate": cert_facts(r.cert)} for r in results]}
    lines = []
    for r, entry in zip(results, data["clusters"]):
        facts = entry["certificate"]
        lines.append(f"{verb} {r.cluster}: serial {facts['serial']}, valid until {facts['not_after']}, in {r.path}")
        if r.archived:
            lines.append(f"  previous bundle archived in {r.archived}")
    lines.append("next: meshpki verify " + " ".join(r.cluster for r in results))
    emit(data, output, "\n".join(lines))


@cli.command("history")
@store_options
@click.argument("cluster", required=False)
@output_option("text", "json")
def history_cmd(settings: Settings, cluster: str | None, output: str) -> None:
    """List archived bundles (replaced by issue --force or rotate) and retired roots."""
    from meshpki.bundle import parse_certs
    from meshpki.render import cert_facts, table
    from meshpki.store import validate_cluster_name

    if cluster:
        validate_cluster_name(cluster)
    rows = []
    for entry in settings.store.history(cluster):
        cert_file = entry.path / ("root-cert.pem" if entry.kind == "root" else "ca-cert.pem")
        try:
            facts = cert_facts(parse_certs(cert_file.read_bytes(), str(cert_file))[0])
        except (OSError, MeshPKIError):
            facts = {"serial": "?", "not_after": "?", "subject": "?"}
        rows.append({"kind": entry.kind, "name": entry.name, "archived_at": entry.stamp,
                     "path": str(entry.path), "serial": facts["serial"], "not_after": facts["not_after"]})
    text = table(["KIND", "NAME", "ARCHIVED", "SERIAL", "NOT AFTER", "PATH"],
                 [[r["kind"], r["name"], r["archived_at"], r["serial"], r["not_after"], r["path"]] for r in rows]) \
        if rows else "no archived bundles or roots"
    emit({"history": rows}, output, text)


@cli.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build the demo store in this folder and keep it, instead of a throw-away one.")
@click.option("--key-type", type=key_type_choice(), default="rsa-4096", show_default=True,
              help="Key type for the demo root and intermediates.")
def demo_cmd(keep: Path | None, key_type: str) -> None:
    """Run the main job end to end on a throw-away store, no cluster needed.

    Creates a root, issues cluster1 and cluster2, verifies both bundles and the
    pair, and prints the cacerts manifest `push --dry-run` would apply.
    """
    from meshpki import demo

    def step(message: str) -> None:
        say(f"==> {message}")

    report = demo.run(keep, key_type, step)
    click.echo(report)


def main() -> None:
    cli(prog_name="meshpki")


if __name__ == "__main__":  # pragma: no cover
    main()
