"""The command line: parse, call one library function, render. Nothing more.

Only this module imports click. Library code raises MeshPKIError subclasses;
`MeshGroup.invoke` turns them into one clear line and exit 1 (InputError:
exit 2), so no traceback ever reaches a user. Usage errors are one line too.
Text output is built in render.py; the fleet file fills option defaults
through click's `default_map`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meshpki import __version__, dates
from meshpki.ca import DEFAULT_INTERMEDIATE_DAYS, DEFAULT_ROOT_DAYS
from meshpki.credentials import NEW_PASSPHRASE_ENV, PASSPHRASE_ENV, PIN_ENV
from meshpki.errors import InputError, MeshPKIError, PassphraseError
from meshpki.findings import shortlist
from meshpki.limits import DEFAULT_CRIT_DAYS, DEFAULT_WARN_DAYS, MAX_DAYS, MIN_TOKEN_TTL
from meshpki.profiles import DEFAULT_ORG, WORKLOAD_TTL

if TYPE_CHECKING:
    from meshpki.render import Block

ENV_SECRETS = "meshpki.env_secrets"  # ctx.meta: secrets taken out of os.environ at start-up
PIN_FILE = "meshpki.pin_file"  # ctx.meta: --pin-file, shared by every command that may unlock a root
PIN_VALUE = "meshpki.pin"  # ctx.meta: the PIN once read, so a rotation between two token keys asks once
# Commands whose --days is the root's validity (the fleet file's root_days), not an intermediate's.
ROOT_COMMANDS = frozenset({"init-root", "begin"})


class BadInput(click.ClickException):
    """A usage error in one line: exit 2 like click's own, without the usage banner."""

    exit_code = 2


def _printable(text: str) -> str:
    from meshpki.render import printable

    return printable(text)


# click 8.2+ raises this UsageError for a group called without a command; it must stay the help page.
_HELP_PAGE: tuple[type[Exception], ...] = tuple(
    e for e in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if e is not None)


def _one_line(exc: click.UsageError, ctx: click.Context) -> BadInput:
    """click's three-line usage error (Usage/Try/Error) as one line that names the help to read."""
    where = exc.ctx or ctx
    return BadInput(f"{_printable(exc.format_message()).rstrip('.')} (see {where.command_path} --help)")


class MeshGroup(click.Group):
    """Turns library errors into click's own, so exit codes stay uniform, and
    usage errors into one line, as the README promises."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _HELP_PAGE:
            raise
        except click.UsageError as exc:
            raise _one_line(exc, click.Context(self, info_name=info_name, parent=parent)) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _HELP_PAGE:
            raise
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None
        except InputError as exc:
            raise BadInput(_printable(str(exc))) from None
        except MeshPKIError as exc:
            raise click.ClickException(_printable(str(exc))) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; nothing half-written was left behind") from None


# -- option types ----------------------------------------------------------

class Parsed(click.ParamType):
    """An option value that a meshpki parser turns into a typed value (its errors: one usage line)."""

    def __init__(self, name: str, parse: Callable[[str], Any], kind: type) -> None:
        self.name, self.parse, self.kind = name, parse, kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind):
            return value
        try:
            return self.parse(str(value))
        except InputError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Parsed("duration", dates.parse_duration, dt.timedelta)  # 24h, 90m, 2d, 1d12h or seconds
TOKEN_TTL = Parsed("duration", functools.partial(dates.parse_duration, at_least=MIN_TOKEN_TTL), dt.timedelta)
MOMENT = Parsed("date", dates.parse_moment, dt.datetime)  # ISO date or date-time, UTC unless it says otherwise


# -- shared options --------------------------------------------------------

class Settings:
    """The store and fleet file every command may use; the store is opened lazily."""

    def __init__(self, store: Path | None, fleet: Any, store_origin: str = "--store") -> None:
        self._store_path = store
        self.fleet = fleet  # config.Fleet
        self._store_origin = store_origin  # how the user named the store, for messages

    def resolver(self, kubeconfig: str | None = None, namespace: str | None = None,
                 secret_name: str | None = None, timeout: float = 10.0):  # -> locate.Resolver
        """Where each cluster's secret lives, from these options and the fleet file."""
        from meshpki.locate import Options, Resolver

        return Resolver(self.fleet, Options(kubeconfig, namespace, secret_name, timeout))

    def push_everything(self) -> str:
        """The command(s) that push every cluster, for a "next:" hint."""
        from meshpki.locate import push_everything

        return push_everything(self.fleet, self.store.clusters())

    @functools.cached_property
    def store(self):  # -> store.Store
        from meshpki.store import Store, default_store_path, folder_problem

        path = self._store_path or default_store_path()
        problem = folder_problem(path)
        if problem:
            origin = self._store_origin if self._store_path else "the default store"
            raise InputError(f"{origin} {path}: {problem}")
        return Store(path)


def _fleet_defaults(ctx: click.Context, param: click.Parameter, path: Path | None):  # -> config.Fleet
    """Load the fleet file first (eager) and make its values the defaults of this command's options.

    click's precedence then does the rest: command line, then env var, then
    the fleet file (default_map), then the option's own default.
    """
    from meshpki.config import Fleet, load_fleet

    if ctx.resilient_parsing:
        return Fleet()
    fleet = load_fleet(path)
    values = {"key_type": fleet.key_type.value if fleet.key_type else None,
              "days": fleet.root_days if ctx.info_name in ROOT_COMMANDS else fleet.days,
              "org": fleet.org}
    ctx.default_map = {**{k: v for k, v in values.items() if v is not None}, **(ctx.default_map or {})}
    return fleet


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--store and --config on every command, handed over as one `settings`."""

    @click.option("--store", "store_path", envvar="MESHPKI_STORE", metavar="DIR", type=click.Path(path_type=Path),
                  help="The meshpki store folder [env MESHPKI_STORE; default ~/.local/share/meshpki].")
    @click.option("--config", "fleet", envvar="MESHPKI_CONFIG", metavar="FILE", is_eager=True,
                  type=click.Path(dir_okay=False, path_type=Path), callback=_fleet_defaults,
                  help="Fleet file with defaults and clusters, e.g. samples/mesh.yaml [env MESHPKI_CONFIG].")
    @functools.wraps(func)
    def wrapper(*args: Any, store_path: Path | None, fleet: Any, **kwargs: Any) -> Any:
        from_env = click.get_current_context().get_parameter_source("store_path") == \
            click.core.ParameterSource.ENVIRONMENT
        return func(*args, settings=Settings(store_path, fleet, "MESHPKI_STORE" if from_env else "--store"),
                    **kwargs)

    return wrapper


def passphrase_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--passphrase-file, and --pin-file for a root key in a PKCS#11 token (kept in ctx.meta)."""
    func = click.option(
        "--pin-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), expose_value=False,
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(PIN_FILE, value) if value else None,
        help=f"Read the PKCS#11 token's user PIN from this file (first line), for a root key in a token "
             f"[else env {PIN_ENV}, else a prompt on a terminal].")(func)
    return click.option(
        "--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"Read the root key passphrase from this file (first line) [else env {PASSPHRASE_ENV}, "
             "else a prompt on a terminal].")(func)


def pkcs11_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--pkcs11", metavar="URI", default=None,
                        help=f"{what}: an RFC 7512 URI such as 'pkcs11:token=meshpki;object=mesh-root' "
                             "(module: ?module-path=... or env MESHPKI_PKCS11_MODULE; PIN: --pin-file or env "
                             "MESHPKI_PKCS11_PIN). Needs meshpki[hsm].")


def output_option(*formats: str, default: str = "text") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("-o", "--output", "output", type=click.Choice(formats), default=default,
                        show_default=True, help="Output format for the data this command prints.")


def key_type_choice() -> click.Choice:
    from meshpki.keys import KeyType

    return click.Choice([k.value for k in KeyType], case_sensitive=False)


def profile_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The intermediate's profile options, shared by issue, rotate and rotate-root reissue."""
    for option in reversed([
        click.option("--key-type", type=key_type_choice(), default=None,
                     help="Intermediate key type [default: fleet file, else the signing root's]."),
        click.option("--days", type=int, default=DEFAULT_INTERMEDIATE_DAYS,
                     help=f"Validity in days, capped at the root's expiry [default: fleet file, else "
                          f"{DEFAULT_INTERMEDIATE_DAYS}]."),
        click.option("--org", default=None, help="Subject organization [default: fleet file, else the root's]."),
        click.option("--san-dns", multiple=True, metavar="NAME",
                     help="DNS SAN of the intermediate (repeatable) [default: istiod.istio-system.svc]."),
    ]):
        func = option(func)
    return func


def trust_domain_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--trust-domain for every command that signs a test workload (verify, audit, push) or pins a root."""
    return click.option("--trust-domain", envvar="MESHPKI_TRUST_DOMAIN", default=None, metavar="TD",
                        help="The mesh's SPIFFE trust domain: test workloads are spiffe://TD/..., name-constrained "
                             "roots are judged against it [env MESHPKI_TRUST_DOMAIN; default: fleet file's "
                             "trust_domain, else cluster.local].")(func)


def resolve_trust_domain(settings: Settings, flag: str | None) -> str:
    """flag (or env) > fleet file > cluster.local, validated."""
    from meshpki.profiles import DEFAULT_TRUST_DOMAIN, validate_trust_domain

    return validate_trust_domain(flag or settings.fleet.trust_domain or DEFAULT_TRUST_DOMAIN)


def secret_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the cacerts secret lives in a cluster; None leaves it to locate.Resolver (fleet file, else default)."""
    from meshpki.kube import DEFAULT_NAMESPACE, DEFAULT_SECRET

    func = click.option("--secret-name", default=None,
                        help=f"Name of the secret [default: fleet file, else {DEFAULT_SECRET}].")(func)
    return click.option("--namespace", default=None,
                        help=f"Namespace of the secret [default: fleet file, else {DEFAULT_NAMESPACE}].")(func)


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--kubeconfig and --timeout, the way kubectl users expect them."""
    func = click.option("--timeout", type=click.FloatRange(min=0.1, max=3600), default=10.0, show_default=True,
                        help="Seconds to wait for each API request.")(func)
    # Not envvar="KUBECONFIG": click would pass "a:b" as one path. kube.py reads
    # KUBECONFIG itself and merges its files like kubectl (locate.py: precedence).
    return click.option("--kubeconfig", default=None, metavar="FILE",
                        help="kubeconfig file [default: $KUBECONFIG (files joined with ':' are merged, like "
                             "kubectl), else the fleet file's, else ~/.kube/config].")(func)


def insecure_tls_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--insecure-skip-tls-verify: for commands that send a key or a token."""
    return click.option("--insecure-skip-tls-verify", "insecure_tls", is_flag=True,
                        help="Send anyway to a context whose kubeconfig says insecure-skip-tls-verify: true or "
                             "whose server is http:// (refused without it: anyone in between could read it).")(func)


def transport_note(context: str | None, kubeconfig: str | None, allow_insecure: bool, what: str) -> str | None:
    """Refuse (or, when allowed, return a warning about) an untrusted connection before `what` is sent over it."""
    from meshpki import kube

    return kube.require_trusted_transport(context, kubeconfig, allow_insecure, what)


def kube_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One --context plus the connection options."""
    return click.option("--context", default=None, metavar="CTX",
                        help="kubeconfig context to use [default: the fleet file's, else the cluster's name]."
                        )(connection_options(func))


# -- passphrases -------------------------------------------------------------

def _env_secret(name: str) -> str | None:
    """A secret variable's value, as taken out of the environment at start-up."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ENV_SECRETS in ctx.meta:
        return ctx.meta[ENV_SECRETS].get(name)
    return os.environ.get(name)


def _passphrase_from_sources(passphrase_file: Path | None, env: str = PASSPHRASE_ENV) -> bytes | None:
    from meshpki.credentials import read_secret_file

    if passphrase_file is not None:
        return read_secret_file(passphrase_file, "passphrase")
    value = _env_secret(env)
    return value.encode() if value else None


def new_root_passphrase(passphrase_file: Path | None, insecure: bool, env: str = PASSPHRASE_ENV,
                        option: str = "--passphrase-file", prompt: str = "Passphrase for the new root key",
                        ) -> bytes | None:
    """A passphrase for a new root key: file, env, or typed twice; never silently none, never short."""
    from meshpki.credentials import check_new_passphrase

    if insecure:
        return None
    found = _passphrase_from_sources(passphrase_file, env)
    if found:
        return check_new_passphrase(found)
    if sys.stdin.isatty():
        typed = click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)
        if typed:
            return check_new_passphrase(typed.encode())
    escape = ", or say --insecure-no-passphrase" if option == "--passphrase-file" else ""
    raise PassphraseError(f"the root key must be encrypted: set {env}, pass {option}, or run on a terminal{escape}")


def token_pin() -> bytes | None:
    """The PKCS#11 user PIN: --pin-file, env, or a prompt; None lets hsm.py try the URI's pin-source."""
    from meshpki.credentials import read_secret_file

    ctx = click.get_current_context()
    if PIN_VALUE not in ctx.meta:
        pin_file = ctx.meta.get(PIN_FILE)
        env = _env_secret(PIN_ENV)
        if pin_file is not None:
            ctx.meta[PIN_VALUE] = read_secret_file(pin_file, "PIN")
        elif env:
            ctx.meta[PIN_VALUE] = env.encode()
        elif sys.stdin.isatty():
            ctx.meta[PIN_VALUE] = click.prompt("PKCS#11 token user PIN", hide_input=True, err=True).encode()
        else:
            ctx.meta[PIN_VALUE] = None
    return ctx.meta[PIN_VALUE]


def _unlock_secret(store, folder: Path, passphrase_file: Path | None, prompt: str) -> bytes | None:
    """What unlocks the root key kept in `folder`: its passphrase, its token's PIN, or nothing."""
    kind = store.key_kind(folder)
    if kind == "pkcs11":
        return token_pin()
    if kind == "plain":
        return None
    found = _passphrase_from_sources(passphrase_file)
    if found:
        return found
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True, err=True).encode()
    raise PassphraseError(f"the root key is encrypted: set {PASSPHRASE_ENV}, pass --passphrase-file, "
                          "or run on a terminal")


def old_root_secret(store, passphrase_file: Path | None) -> bytes | None:
    """The secret that unlocks the store's root key alone: its passphrase, or its token's PIN."""
    return _unlock_secret(store, store.root_dir, passphrase_file, "Root key passphrase")


def new_root_secret(store, passphrase_file: Path | None, old: bytes | None = None) -> bytes | None:
    """The secret of a rotation's new root: its token's PIN, else $MESHPKI_NEW_ROOT_PASSPHRASE
    when it was given its own, else the old root's passphrase (`old` when already read)."""
    kind = store.key_kind(store.rotation_dir)
    if kind == "encrypted" and not _env_secret(NEW_PASSPHRASE_ENV) and old and store.key_kind(store.root_dir) == kind:
        return old
    if kind == "encrypted" and _env_secret(NEW_PASSPHRASE_ENV):
        return str(_env_secret(NEW_PASSPHRASE_ENV)).encode()
    return _unlock_secret(store, store.rotation_dir, passphrase_file, "New root key passphrase")


def root_passphrase(store, passphrase_file: Path | None) -> bytes | None:
    """The secret for every root that may sign now: the store's root, and during a
    rotation also the new root's (CRLs are signed by both), carried by a RootSecret."""
    from meshpki.credentials import RootSecret

    old = old_root_secret(store, passphrase_file)
    if not store.has_rotation():
        return old
    return RootSecret(old or b"", new_root_secret(store, passphrase_file, old))


def signing_secret(store, passphrase_file: Path | None) -> bytes | None:
    """The secret of the key that signs intermediates now: the new root's during a rotation."""
    if store.has_rotation():
        return new_root_secret(store, passphrase_file)
    return old_root_secret(store, passphrase_file)


# -- progress and messages -----------------------------------------------------

def say(message: str) -> None:
    """Messages go to stderr; stdout is for data."""
    from meshpki.render import printable

    click.echo(printable(message), err=True)


def progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A one-line counter on a terminal; silence in pipes and CI logs."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        click.echo(f"\r{label} {done}/{total}", err=True, nl=done == total)

    return show


DEFAULT_FLEET_PARALLEL = 16


def parallel_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--parallel", type=click.IntRange(min=1, max=256), default=DEFAULT_FLEET_PARALLEL,
                        show_default=True, metavar="N",
                        help="Clusters worked on at the same time with --all (1: one after another).")(func)


def show(block: Block) -> None:
    for line in block.err:
        say(line)
    if block.out:
        from meshpki.render import printable

        click.echo(printable("\n".join(block.out)))


def for_each(targets: list[Any], work: Callable[[Any], Block], what: str, output: str = "text",
             parallel: int = 1) -> None:
    """Do `work` for every target, `parallel` at a time, going on past a failing
    one: blocks print in fleet order; exit 1 at the end naming the failed ones.
    A single target's block is printed as it is and its error is the command's.
    With several targets, -o json|yaml prints one document with a result per target."""
    from meshpki.fanout import fan_out
    from meshpki.render import to_json, to_yaml

    if len(targets) == 1:
        block = work(targets[0])
        show(block)
        if output != "text" and "object" in block.data:
            text = to_yaml(block.data["object"]) if output == "yaml" else to_json(block.data["object"])
            click.echo(text, nl=not text.endswith("\n"))  # no blank line after the manifest
        return
    counter = progress_printer(what)
    results: list[dict[str, Any]] = []
    failed: list[str] = []

    def ready(outcome: Any) -> None:
        target = targets[outcome.index]
        if counter is not None:
            click.echo("\r\x1b[K", err=True, nl=False)  # clear the progress line before a block
        result = {"cluster": target.cluster, "context": getattr(target, "context", None), "ok": outcome.ok}
        if outcome.ok:
            show(outcome.value)  # with -o json|yaml only messages: the data comes in one document below
            result.update({k: v for k, v in outcome.value.data.items()}, error=None)
        else:
            say(f"Error: {outcome.error}")
            failed.append(target.cluster)
            result["error"] = str(outcome.error)
        results.append(result)

    fan_out(targets, work, parallel, on_ready=ready,
            progress=(lambda done, total: counter(done, total)) if counter is not None else None)
    if output != "text":
        document = {"results": results, "failed": len(failed), "total": len(targets)}
        text = to_yaml(document) if output == "yaml" else to_json(document)
        click.echo(text, nl=not text.endswith("\n"))
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(targets)} {what} failed: {shortlist(failed)} (see above)")


def emit(data: Any, text: str, output: str) -> None:
    """Print a command's data in the chosen format; `text` is its pre-rendered text form."""
    from meshpki.render import OutputFormat, printable, render_data

    click.echo(render_data(data, OutputFormat(output), printable(text)))


# -- commands ----------------------------------------------------------------

@click.group("meshpki", cls=MeshGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meshpki")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """meshpki: one shared root of trust for a multi-cluster Istio mesh.

    Makes the root and one intermediate CA per cluster, verifies the bundles the
    way istiod and the proxies will, pushes them as the `cacerts` secret,
    rotates them without splitting the mesh, and audits expiry.

    \b
    Quick start:
      meshpki demo                          # the main job, in a throw-away store
      meshpki init-root                     # shared root, key encrypted
      meshpki issue cluster1 cluster2       # one intermediate bundle per cluster
      meshpki verify                        # every bundle and every pair, as istiod would
      meshpki push cluster1 --context ctx1  # write the cacerts secret
    """
    from meshpki.credentials import take_from_environ

    # before anything can start a child process (kubeconfig exec plugins): see credentials.py
    ctx.meta[ENV_SECRETS] = take_from_environ()


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
    from meshpki import byo, render

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


def token_target(uri: str | None, progress: str):  # -> ca.TokenTarget | None
    """--pkcs11 URI plus the PIN, the URI checked before anything is asked or made."""
    if uri is None:
        return None
    from meshpki import ca, hsm

    hsm.TokenURI.parse(uri)
    return ca.TokenTarget(uri, token_pin(), announce=lambda: say(progress))


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


def print_issued(results, output: str, verb: str, next_step: str | None = None) -> None:
    from meshpki import render

    for result in results:
        for warning in result.warnings:
            say(f"warning: {warning}")
    emit(*render.issued_view(results, verb, next_step), output)


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
    from meshpki import rotate
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
      meshpki push --all
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
    from meshpki import ca, rotate
    from meshpki.keys import KeyType

    store = settings.store
    ca.check_days(days)
    # resuming may re-sign the CRLs with both roots; a new rotation has only A so far
    passphrase = (root_passphrase if store.has_rotation() else old_root_secret)(store, passphrase_file)
    token = new_passphrase = None
    if not store.has_rotation():  # only a rotation not yet begun makes a key
        token = token_target(pkcs11, "generating the new root key inside the PKCS#11 token ...")
        new_passphrase = None if token else _new_root_b_passphrase(store, passphrase_file, new_passphrase_file)
    result = rotate.begin(store, KeyType.parse(key_type) if key_type else None, days, passphrase,
                          org=settings.fleet.org, new_passphrase=new_passphrase, token=token)
    print_step(result, output, "now trusts old + new root",
               f"{settings.push_everything()}, then meshpki rotate-root reissue")


def _new_root_b_passphrase(store, passphrase_file: Path | None, new_passphrase_file: Path | None) -> bytes | None:
    """Root B's passphrase when it differs from A's (None: reuse A's, or B unencrypted like A)."""
    from meshpki.credentials import check_new_passphrase

    given = _passphrase_from_sources(new_passphrase_file, NEW_PASSPHRASE_ENV)
    if given:
        return check_new_passphrase(given)
    if store.key_kind(store.root_dir) == "pkcs11":  # A has no passphrase to reuse
        return new_root_passphrase(passphrase_file, insecure=False)
    return None


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
    """
    from meshpki import rotate
    from meshpki.store import validate_cluster_name

    for name in clusters:
        validate_cluster_name(name)
    store = settings.store
    results, skipped = rotate.reissue(store, clusters, issue_options(key_type, days, org, san_dns),
                                      signing_secret(store, passphrase_file),
                                      progress=progress_printer("generating keys"))
    for name in skipped:
        say(f"{name}: already issues under the new root; unchanged")
    if not results:
        emit({"clusters": [], "unchanged": skipped}, "nothing to reissue: every cluster issues under the new root", output)
        return
    print_issued(results, output, verb="reissued",
                 next_step=f"next: {settings.push_everything()}, wait the grace period, "
                           "then meshpki rotate-root finish")


def grace_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--grace", type=DURATION, default=dates.format_duration(WORKLOAD_TTL),
                        show_default=True, help=help)


@rotate_root_group.command("finish")
@store_options
@grace_option("How long after the last reissue (or its push) workloads may still hold old-chain certs.")
@click.option("--force", is_flag=True, help="Skip the grace period wait (workloads with old certs lose mTLS).")
@output_option("text", "json")
def rotate_root_finish(settings: Settings, grace: dt.timedelta, force: bool, output: str) -> None:
    """Trust the new root alone; it becomes the store's root, the old one goes to history.

    Refused while any cluster still issues under the old root, and until the
    grace period has passed.
    """
    from meshpki import rotate

    result = rotate.finish(settings.store, grace, force=force)
    print_step(result, output, "now trusts the new root only", settings.push_everything())


@rotate_root_group.command("status")
@store_options
@grace_option("Grace period used to compute when finish may run.")
@output_option("text", "json")
def rotate_root_status(settings: Settings, grace: dt.timedelta, output: str) -> None:
    """The rotation's phase, and per cluster which root issues it and which it trusts."""
    from meshpki import render, rotate

    report = rotate.status(settings.store, grace)
    emit(report.to_dict(), render.rotation_status_text(report), output)


def print_step(result, output: str, changed_text: str, next_step: str) -> None:
    from meshpki import render

    for note in result.notes:
        say(note)
    emit(*render.step_view(result, changed_text, next_step), output)


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
@trust_domain_option
@insecure_tls_option
@parallel_option
@output_option("text", "yaml", "json")
def push_cmd(settings: Settings, cluster: str | None, context: str | None, kubeconfig: str | None,
             timeout: float, push_all: bool, namespace: str | None, secret_name: str | None, form: str,
             dry_run: bool, allow_root_change: bool, trust_domain: str | None, insecure_tls: bool,
             parallel: int, output: str) -> None:
    """Write a cluster's bundle as the `cacerts` secret, safely and idempotently.

    Verifies the bundle (for --trust-domain), reads the live secret, refuses a
    change of roots istiod would not take (the new roots must be a subset or a
    superset of the live ones), keeps the live secret's type and a live
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
    targets = settings.resolver(kubeconfig, namespace, secret_name, timeout).for_push(cluster, context, push_all)
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

    def one(target: Any) -> Block:
        if dry_run:
            return _dry_run_one(store, target, allow_root_change, output, form, domain)
        note = transport_note(target.context, target.kubeconfig, insecure_tls, "the CA private key")
        block = _push_one(store, target, allow_root_change, output, form, domain)
        block.err[:0] = [note] if note else []
        return block

    for_each(targets, one, "pushes", output, parallel)


def _dry_run_one(store, target, allow_root_change: bool, output: str, form: str, trust_domain: str) -> Block:
    from meshpki import push as pushmod
    from meshpki.render import dry_run_block

    # text output is the plan, which needs the cluster; a manifest does not (GitOps, offline)
    dry = pushmod.dry_run(store, target, allow_root_change, form, trust_domain, offline_ok=output != "text")
    return dry_run_block(dry, output)


def _push_one(store, target, allow_root_change: bool, output: str, form: str, trust_domain: str) -> Block:
    from meshpki import push as pushmod
    from meshpki.render import push_block

    return push_block(pushmod.push(store, target, allow_root_change, form, trust_domain), output)


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
    rootkey.check_exportable(store, new_root)
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
              help="Grade as of this date instead of now, e.g. 2026-06-01 or 2026-06-01T12:00:00Z.")
@click.option("--parallel", type=click.IntRange(min=1, max=256), default=32, show_default=True,
              help="Clusters read at the same time.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="Also write the Prometheus exposition here, atomically (node_exporter's textfile collector "
                   "reads *.prom).")
@click.option("--pushgateway", envvar="MESHPKI_PUSHGATEWAY", default=None, metavar="URL",
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
    does not list, or a fleet `remotes:` entry without one, is a WARNING.
    Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the most urgent wins:
    CRITICAL, then UNKNOWN, then WARNING).

    \b
    Examples:
      meshpki audit                                  # the store, and the fleet file's clusters
      meshpki audit --context kind-cluster1 --context kind-cluster2 -o json
      meshpki audit --all-contexts --at 2026-06-01   # what will have expired by June
      meshpki audit -o prometheus --textfile /var/lib/node_exporter/textfile/meshpki.prom
      meshpki audit --public-only --pushgateway http://pushgateway.monitoring:9091   # in-cluster CronJob
    """
    from meshpki import audit
    from meshpki.render import OutputFormat, render_audit

    audit.check_thresholds(warn_days, crit_days)
    try:
        targets = settings.resolver(kubeconfig, namespace, secret_name, timeout).for_audit(
            contexts, all_contexts, cluster_name)
        from meshpki.crl import skip_evicted

        targets, notes = skip_evicted(settings.store, targets)
        for note in notes:
            say(note)
        report = audit.run(settings.store, targets, at, warn_days, crit_days, parallel,
                           progress_printer("auditing clusters") if len(targets) > 1 else None,
                           resolve_trust_domain(settings, trust_domain), audit.MeshLayout.of(settings.fleet),
                           public_only=public_only)
    except InputError:
        raise
    except MeshPKIError as exc:  # the audit could not run: UNKNOWN, not WARNING (exit 1)
        say(f"Error: {exc}")
        click.get_current_context().exit(int(audit.Grade.UNKNOWN))
    shown, exposition = render_audit(report, OutputFormat(output))
    click.echo(shown, nl=not shown.endswith("\n"))
    failures = audit.export(exposition, textfile, pushgateway)
    for failure in failures:
        say(f"Error: {failure}")
    code = audit.exit_code(report, failures)
    if code:
        click.get_current_context().exit(code)


class DefaultListGroup(MeshGroup):
    """`meshpki history [CLUSTER]` lists; `meshpki history prune` prunes. A first
    argument that names no subcommand goes to `list` (a cluster called "prune"
    is listed with `meshpki history list prune`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


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


@cli.command("verify")
@store_options
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--all", "all_clusters", is_flag=True,
              help="Verify every cluster in the store (also the default when no TARGET is named).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on errors.")
@click.option("--warn-days", type=click.IntRange(min=0, max=MAX_DAYS), default=DEFAULT_WARN_DAYS, show_default=True,
              help="Warn when a certificate on the path expires within this many days.")
@click.option("--context", "contexts", multiple=True, metavar="CTX",
              help="Also verify the live cacerts secret of this kubeconfig context, and compare it with the "
                   "store (repeatable).")
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
    emit(report.to_dict(), verify_text(report, strict=strict), output)
    code = report.exit_code(strict)
    if code:
        click.get_current_context().exit(code)


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
    emit(*render.revoked_view(cluster, result), output)


@cli.group("crl", cls=MeshGroup)
def crl_group() -> None:
    """Keep the mesh's CRLs fresh and list what is revoked.

    A CRL whose nextUpdate has passed makes proxies reject every peer: renew
    before then (meshpki audit warns --warn-days ahead) and push --all.
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
    result = crl.renew(store, root_passphrase(store, passphrase_file), days=days)
    for note in result.notes:
        say(note)
    emit(*render.renewed_view(result), output)


@crl_group.command("show")
@store_options
@output_option("text", "json")
def crl_show_cmd(settings: Settings, output: str) -> None:
    """List what is revoked (cluster, serial, reason, date) and every CRL's window."""
    from meshpki import crl
    from meshpki.render import crl_show_text

    report = crl.show(settings.store)
    emit(report.to_dict(), crl_show_text(report), output)


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


# -- bring your own PKI ------------------------------------------------------

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
    The key type defaults to the fleet file's, else rsa-4096 like `issue`.

    \b
    Examples (site, then root holder, then site):
      meshpki csr cluster3 --out cluster3.csr
      meshpki sign cluster3.csr --out signed-cluster3/
      meshpki complete cluster3 signed-cluster3/
    """
    from meshpki import byo, profiles
    from meshpki.keys import KeyType

    chosen = KeyType.parse(key_type)
    if not force:
        settings.store.refuse_pending(cluster)  # before a word about keys
    say(f"generating the {chosen.value} key of {cluster}'s CA ...")
    result = byo.make_csr(settings.store, cluster, chosen, org,
                          san_dns or (profiles.DEFAULT_ISTIOD_SAN,), replace=force)
    if str(out) == "-":
        click.echo(result.csr_pem.decode(), nl=False)
    else:
        byo.write_public(out, result.csr_pem)
    say(f"{cluster}: key kept pending in {result.pending} (it never leaves this store); "
        f"request written to {'stdout' if str(out) == '-' else out}")
    say(f"next: send it to the root holder (meshpki sign {out if str(out) != '-' else 'FILE'} --out DIR), "
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
    issuer = rotate.current_issuer(store, signing_secret(store, passphrase_file))
    result = byo.sign_csr(store, pem, str(csr_file), issuer, out, cluster=cluster, days=days,
                          san_dns=san_dns or (profiles.DEFAULT_ISTIOD_SAN,))
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
              help=f"Use a TokenRequest token that expires after DURATION (e.g. 30d, 12h; at least "
                   f"{dates.format_duration(MIN_TOKEN_TTL)}) "
                   "instead of a long-lived token Secret.")
@click.option("--rotate", is_flag=True,
              help="Make a new token, update the primary, then delete the old token Secret.")
@click.option("--token-wait", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the token controller to fill a new token Secret.")
@click.option("--dry-run", is_flag=True,
              help="Write nowhere (needs a token that already exists); with -o yaml|json print the secret.")
@insecure_tls_option
@parallel_option
@output_option("text", "yaml", "json")
def remote_secret_cmd(settings: Settings, cluster: str | None, context: str | None, primary_context: str | None,
                      kubeconfig: str | None, timeout: float, all_remotes: bool, service_account: str,
                      namespace: str, token_ttl: dt.timedelta | None, rotate: bool, token_wait: float, dry_run: bool,
                      insecure_tls: bool, parallel: int, output: str) -> None:
    """Give a primary's istiod read access to a remote cluster.

    In the remote: a service account, a ClusterRole that may only get, list
    and watch what istiod reads, the binding, and a token. In the primary:
    the Secret istio-remote-secret-CLUSTER (label istio/multiCluster=true)
    holding a kubeconfig with that token. Every write is checked with
    dryRun=All first; an unchanged secret writes nothing.

    \b
    Examples:
      meshpki remote-secret cluster2 --context kind-cluster2 --primary-context kind-cluster1
      meshpki remote-secret cluster2 --context c2 --primary-context c1 --token-ttl 30d
      meshpki remote-secret cluster2 --context c2 --primary-context c1 --rotate
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


def main() -> None:
    from meshpki import scratch

    scratch.install_signal_handlers()  # the kubernetes client's copies of client keys go on SIGTERM too
    cli(prog_name="meshpki")


if __name__ == "__main__":  # pragma: no cover
    main()
