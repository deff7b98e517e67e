"""What reaches the terminal: data on stdout, messages and progress on stderr,
and a fleet's per-cluster blocks printed whole, in fleet order."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meshpki.findings import shortlist

if TYPE_CHECKING:
    from meshpki.render import Block


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


def show(block: Block) -> None:
    """One cluster's block: its messages, then its text."""
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

    if len(targets) == 1:
        block = work(targets[0])
        show(block)
        if output != "text" and "object" in block.data:
            document(block.data["object"], output)
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
            result.update(outcome.value.data, error=None)
        else:
            say(f"Error: {outcome.error}")
            failed.append(target.cluster)
            result["error"] = str(outcome.error)
        results.append(result)

    fan_out(targets, work, parallel, on_ready=ready,
            progress=(lambda done, total: counter(done, total)) if counter is not None else None)
    if output != "text":
        document({"results": results, "failed": len(failed), "total": len(targets)}, output)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(targets)} {what} failed: {shortlist(failed)} (see above)")


def document(data: Any, output: str) -> None:
    """Data as one JSON or YAML document, with no blank line after it (a manifest is piped to kubectl)."""
    from meshpki.render import OutputFormat, render_data

    text = render_data(data, OutputFormat(output), "")
    click.echo(text, nl=not text.endswith("\n"))


def deliver(out: Path, data: bytes) -> str:
    """A public PEM (a CSR, CRLs) to FILE, or to stdout for '-'; says where it went."""
    from meshpki import byo

    if str(out) == "-":
        click.echo(data.decode(), nl=False)
        return "stdout"
    byo.write_public(out, data)
    return str(out)


def emit(data: Any, text: str, output: str) -> None:
    """Print a command's data in the chosen format; `text` is its pre-rendered text form."""
    from meshpki.render import OutputFormat, printable, render_data

    click.echo(render_data(data, OutputFormat(output), printable(text)))


def print_issued(results, output: str, verb: str, next_step: str | None = None, sites=()) -> None:
    from meshpki import render

    for result in results:
        for warning in result.warnings:
            say(f"warning: {warning}")
    emit(*render.issued_view(results, verb, next_step, sites), output)


def print_step(result, output: str, changed_text: str, next_step: str) -> None:
    from meshpki import render

    for note in result.notes:
        say(note)
    emit(*render.step_view(result, changed_text, next_step), output)
