"""One piece of work per cluster, a bounded number at a time.

A fleet command (push --all, remote-secret --all, audit's reads) waits on
the network, not the CPU: 100 clusters at 100 ms cost 100 x 4 round trips
one by one, and about 1/N of that N at a time. Results come back in the
order of the input (fleet order), each as soon as it and every one before
it is done, so output can be printed as it arrives and still read like a
sequential run's. A cluster that fails (a MeshPKIError) does not stop the
others; anything else is a bug and is raised once the running work ended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar

from meshpki.errors import MeshPKIError

I = TypeVar("I")  # noqa: E741
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one item's work gave: a value, or the error that stopped it."""

    index: int
    value: T | None = None
    error: MeshPKIError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def fan_out(items: Sequence[I], work: Callable[[I], T], parallel: int,
            on_ready: Callable[[Outcome[T]], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[Outcome[T]]:
    """Run `work` on every item, at most `parallel` at once (1: one after
    another, in order). `on_ready` sees each outcome in input order, as soon
    as all earlier ones are done; `progress(done, total)` counts completions."""
    total = len(items)
    outcomes: list[Outcome[T] | None] = [None] * total
    shown = 0

    def run(index: int) -> Outcome[T]:
        try:
            return Outcome(index, value=work(items[index]))
        except MeshPKIError as exc:
            return Outcome(index, error=exc)

    def release() -> None:
        nonlocal shown
        while shown < total and outcomes[shown] is not None:
            if on_ready is not None:
                on_ready(outcomes[shown])  # type: ignore[arg-type]
            shown += 1

    if total == 0:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, total)), thread_name_prefix="meshpki-fleet")
    try:
        futures: dict[Future[Outcome[T]], int] = {pool.submit(run, i): i for i in range(total)}
        for done, future in enumerate(as_completed(futures), 1):
            outcomes[futures[future]] = future.result()
            if progress is not None:
                progress(done, total)
            release()
    finally:
        # On Ctrl-C (or a bug) start nothing new; what runs finishes its own
        # single-cluster step (each is safe to interrupt between clusters).
        pool.shutdown(wait=True, cancel_futures=True)
    return [o for o in outcomes if o is not None]
