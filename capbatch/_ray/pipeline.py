"""Wiring a Ray run: the journal actor (on the driver's node), the budget actor, and the
``map_batches`` stage of ``SolveBatches`` workers. ``capbatch.ray.solve`` and
``capbatch run --engine ray`` both build their run here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capbatch._exceptions import CapbatchError
from capbatch._ray.budget import Budget
from capbatch._ray.callback_hub import CallbackHub
from capbatch._ray.journal_service import JournalService
from capbatch._ray.remote_journal import RemoteJournal
from capbatch._ray.settings import WorkerSettings
from capbatch._ray.worker import SolveBatches
from capbatch._run.spend import spent_before

#: Rows per batch a worker is handed when the options do not say: small enough that a
#: rate-limited provider's batch finishes in seconds (results stream out, a killed
#: worker's retry is short), large enough to amortise a batch's journal look-up.
DEFAULT_BATCH_ROWS = 64


@dataclass
class Actors:
    """The run's two shared actors, and the journal as the driver sees it."""

    journal: Any
    budget: Any
    remote: RemoteJournal
    #: ``--callback-url``: the receiver's actor, its token and its URL prefix.
    callbacks: tuple[Any, str, str] | None = None

    def close(self) -> None:
        """Close the journal (checkpointed, locks let go), then end the actors."""
        import ray

        try:
            ray.get(self.journal.close.remote())
        finally:
            ray.kill(self.budget)
            ray.kill(self.journal)
            if self.callbacks is not None:
                ray.kill(self.callbacks[0])


def unwrap(exc: BaseException) -> BaseException:
    """The capbatch error inside a Ray error (a worker's or an actor's), if any."""
    seen = 0
    while seen < 5:
        cause = getattr(exc, "cause", None) or exc.__cause__
        if isinstance(exc, CapbatchError) and type(exc).__module__.startswith("capbatch"):
            return exc
        if cause is None:
            return exc
        exc, seen = cause, seen + 1
    return exc


def worker_failure(actors: Actors) -> CapbatchError | None:
    """The first run-stopping error a worker reported to the journal, rebuilt as its own
    class (its exit status and message are then those of ``capbatch run``)."""
    import importlib

    import ray

    failure = ray.get(actors.journal.first_failure.remote())
    if failure is None:
        return None
    module, name, message, code = failure
    kind: Any = importlib.import_module(module)
    for part in name.split("."):
        kind = getattr(kind, part, None)
    if not (isinstance(kind, type) and issubclass(kind, CapbatchError)):
        kind = CapbatchError
    error: CapbatchError = kind.__new__(kind)
    CapbatchError.__init__(error, message, error_code=code)
    return error


def start_on_driver_node(cls: type, ready: str, *args: Any) -> tuple[Any, Any]:
    """An actor of ``cls`` pinned to this (the driver's) node, and the answer of its
    method ``ready`` (if that fails: the actor ended, the capbatch error inside raised).
    The journal and the callback receiver live there: they must outlive any worker, and
    be found where the same command is run again (the file, the URL the user gave)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor: Any = (
        ray.remote(cls)
        .options(
            num_cpus=0,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        )
        .remote(*args)
    )
    try:
        return actor, ray.get(getattr(actor, ready).remote())
    except Exception as exc:
        ray.kill(actor)
        raise unwrap(exc) from None


def open_journal(output: str | None, journal: str, source: str | None) -> tuple[Any, RemoteJournal]:
    """The journal actor, on the driver's node, once its file is open."""
    actor, _ = start_on_driver_node(JournalService, "ready", output, journal, source)
    return actor, RemoteJournal(actor)


def start_budget(settings: WorkerSettings) -> Any:
    """The budget actor (what earlier runs spent is set once the journal says)."""
    import ray

    limits = settings.limits
    return (
        ray.remote(Budget)
        .options(num_cpus=0, max_restarts=0)
        .remote(
            rate=limits.rate,
            max_in_flight=limits.max_in_flight,
            cap=limits.max_spend,
            price=settings.price,
            price_confirmed=settings.price_confirmed,
        )
    )


def start_actors(
    settings: WorkerSettings, *, output: str | None, journal: str, source: str | None
) -> tuple[Actors, float]:
    """The run's budget and journal actors (both starting at once: each is a new
    process), and what earlier runs of the journal spent, counted against the cap."""
    import ray

    budget = start_budget(settings)
    try:
        journal_actor, remote = open_journal(output, journal, source)
    except BaseException:
        ray.kill(budget)
        raise
    actors = Actors(journal_actor, budget, remote)
    try:
        spent = spent_before(remote, settings.price)
        ray.get(budget.set_spent_before.remote(spent))
        actors.callbacks = start_callback_hub(settings)
    except BaseException:
        actors.close()
        raise
    return actors, spent


def start_callback_hub(settings: WorkerSettings) -> tuple[Any, str, str] | None:
    """The cluster's callback receiver on the driver's node, listening, with its token
    and URL prefix; None without ``--callback-url``."""
    if settings.callback_url is None or settings.callback_listen is None:
        return None
    hub, (token, url) = start_on_driver_node(
        CallbackHub,
        "start",
        settings.callback_url,
        settings.callback_listen,
        settings.profile,
        settings.key,
    )
    return hub, token, url


def solve_stage(
    dataset: Any,
    settings: WorkerSettings,
    actors: Actors,
    *,
    workers: int | None,
    batch_rows: int | None,
    reads: bool = True,
) -> Any:
    """``dataset`` through the workers: one ``SolveBatches`` actor per worker. A local
    solver's worker takes a whole CPU (one model, one thread), and by default there is
    one per CPU of the cluster, but one when ``dataset`` is read by Ray tasks; a
    provider's worker mostly waits on the network and takes a quarter."""
    import ray

    local = settings.profile.is_local
    if workers is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        # A dataset read by Ray tasks needs a CPU for them: local workers holding every
        # CPU would wait for input for ever (``reads``: the dataset has such tasks).
        workers = max(1, cpus - 1 if reads else cpus) if local else 2
    return dataset.map_batches(
        SolveBatches,
        fn_constructor_kwargs={
            "settings": settings,
            "budget": actors.budget,
            "journal": actors.journal,
            "callbacks": actors.callbacks,
        },
        batch_format="pyarrow",
        batch_size=batch_rows or DEFAULT_BATCH_ROWS,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1 if local else 0.25,
    )
