"""Options, option types and the command group class shared by every command.

The fleet file (`--config`) fills option defaults through click's `default_map`:
command line, then environment, then fleet file, then the built-in default.
Library errors become one line and an exit code here (`MeshGroup`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from meshpki import dates
from meshpki.ca import DEFAULT_INTERMEDIATE_DAYS
from meshpki.credentials import PASSPHRASE_ENV, PIN_ENV
from meshpki.errors import ExitCode, InputError, MeshPKIError
from meshpki.kube import DEFAULT_TIMEOUT
from meshpki.limits import MIN_TOKEN_TTL, TOKEN_TTL_NEVER
from meshpki.profiles import WORKLOAD_TTL

ENV_SECRETS = "meshpki.env_secrets"  # ctx.meta: secrets taken out of os.environ at start-up


PIN_FILE = "meshpki.pin_file"  # ctx.meta: --pin-file, shared by every command that may unlock a root


PIN_VALUE = "meshpki.pin"  # ctx.meta: the PIN once read, so a rotation between two token keys asks once


# Commands whose --days is the root's validity (the fleet file's root_days), not an intermediate's.
ROOT_COMMANDS = frozenset({"init-root", "begin"})


class BadInput(click.ClickException):
    """A usage error in one line: exit 2 like click's own, without the usage banner."""

    exit_code = ExitCode.USAGE


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


class DefaultListGroup(MeshGroup):
    """`meshpki history [CLUSTER]` lists; `meshpki history prune` prunes. A first
    argument that names no subcommand goes to `list` (a cluster called "prune"
    is listed with `meshpki history list prune`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


class Parsed(click.ParamType):
    """An option value that a meshpki parser turns into a typed value (its errors: one usage line)."""

    def __init__(self, name: str, parse: Callable[[str], Any], kind: type) -> None:
        self.name, self.parse, self.kind = name, parse, kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and self.kind is not str:  # a str is what gets parsed
            return value
        try:
            return self.parse(str(value))
        except InputError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Parsed("duration", dates.parse_duration, dt.timedelta)  # 24h, 90m, 2d, 1d12h or seconds


def _token_ttl(text: str) -> dt.timedelta | str:
    """remote-secret --token-ttl: a TokenRequest lifetime, or `never` for a long-lived token Secret."""
    if text.strip().lower() == TOKEN_TTL_NEVER:
        return TOKEN_TTL_NEVER
    try:
        return dates.parse_duration(text, at_least=MIN_TOKEN_TTL)
    except InputError as exc:
        raise InputError(f"{exc}, or {TOKEN_TTL_NEVER} for a long-lived token Secret") from None


TOKEN_TTL = Parsed("duration", _token_ttl, dt.timedelta)


MOMENT = Parsed("date", dates.parse_moment, dt.datetime)  # ISO date or date-time, UTC unless it says otherwise


def _pushgateway_url(text: str) -> str:
    from meshpki.audit.read import pushgateway_url  # the audit's own rule, imported only when used

    return pushgateway_url(text)


PUSHGATEWAY_URL = Parsed("url", _pushgateway_url, str)


class Settings:
    """The store and fleet file every command may use; the store is opened lazily."""

    def __init__(self, store: Path | None, fleet: Any, store_origin: str = "--store") -> None:
        self._store_path = store
        self.fleet = fleet  # config.Fleet
        self._store_origin = store_origin  # how the user named the store, for messages

    def resolver(self, kubeconfig: str | None = None, namespace: str | None = None,
                 secret_name: str | None = None, timeout: float = DEFAULT_TIMEOUT):  # -> locate.Resolver
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
    func = click.option("--timeout", type=click.FloatRange(min=0.1, max=3600), default=DEFAULT_TIMEOUT,
                        show_default=True, help="Seconds to wait for each API request.")(func)
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


DEFAULT_FLEET_PARALLEL = 16


def parallel_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--parallel", type=click.IntRange(min=1, max=256), default=DEFAULT_FLEET_PARALLEL,
                        show_default=True, metavar="N",
                        help="Clusters worked on at the same time with --all (1: one after another).")(func)


def grace_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--grace", type=DURATION, default=dates.format_duration(WORKLOAD_TTL),
                        show_default=True, help=help)
