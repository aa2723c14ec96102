"""``capbatch.ray.solve``: a Ray dataset in, the same rows with capbatch's result
columns out, lazily (nothing is sent until the dataset is consumed), through the same
budget and journal actors as ``capbatch run --engine ray``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from capbatch._exceptions import ConfigError
from capbatch._ray.cli import require_ray
from capbatch._ray.pipeline import Actors, solve_stage, start_actors
from capbatch._ray.run import refuse_unsupported, settings_for
from capbatch._run import engine
from capbatch._run.options import RunOptions

#: Rows read from the head of the dataset to find its image and id columns.
HEAD_ROWS = 64


def solve_dataset(
    dataset: Any, options: RunOptions, *, workers: int | None, batch_rows: int | None
) -> Any:
    """The workers' stage over ``dataset``. Its journal is ``options.journal`` (on this,
    the driver's, node), else one in the user cache named by the dataset's first rows
    (as ``capbatch.run`` names one for a DataFrame): solving the same dataset again
    resumes, and pays for nothing twice. The actors live as long as the stage does
    (its workers hold them)."""
    return build(dataset, options, workers=workers, batch_rows=batch_rows)[0]


def build(
    dataset: Any, options: RunOptions, *, workers: int | None, batch_rows: int | None
) -> tuple[Any, Actors]:
    """``solve_dataset``'s stage and the run's actors (tests and benchmarks look in)."""
    require_ray()
    refuse_unsupported(options)
    if options.output is not None:
        raise ConfigError(
            "capbatch.ray.solve returns a dataset: write it with its own writers "
            "(ds.write_parquet(...)), not with output="
        )
    if options.dry_run:
        raise ConfigError("dry_run is not supported by capbatch.ray.solve")
    head = _head(dataset)
    setup = engine._prepare(head, options)
    settings = settings_for(setup, wire=False)
    actors, _ = start_actors(settings, output=None, journal=setup.journal_path, source=None)
    stage = solve_stage(dataset, settings, actors, workers=workers, batch_rows=batch_rows)
    return stage, actors


def _head(dataset: Any) -> pa.Table:
    """The dataset's first rows (its schema alone when it has none)."""
    try:
        batch = dataset.take_batch(HEAD_ROWS, batch_format="pyarrow")
    except (ValueError, IndexError, StopIteration):
        batch = None
    if isinstance(batch, pa.Table) and batch.num_rows:
        return batch
    schema = dataset.schema()
    arrow = getattr(schema, "base_schema", schema)
    if not isinstance(arrow, pa.Schema):
        raise ConfigError("capbatch.ray.solve needs a dataset of Arrow rows (columns)")
    return arrow.empty_table()
