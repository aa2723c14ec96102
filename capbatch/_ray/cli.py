"""The CLI's way into the Ray engine (``capbatch run --engine ray``): Ray checked for
first, with the install line when it is missing."""

from __future__ import annotations

from pathlib import Path

from capbatch._exceptions import ConfigError
from capbatch._run.engine import RunOutcome
from capbatch._run.options import RunOptions


def require_ray() -> None:
    """Ray Data importable, else a ``ConfigError`` saying how to install it."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("the Ray engine needs Ray Data: pip install 'capbatch[ray]'") from None


def run_on_ray(input_path: Path | str, options: RunOptions, address: str | None) -> RunOutcome:
    """``capbatch run INPUT --engine ray [--ray-address ADDRESS]``."""
    require_ray()
    from capbatch._ray.run import execute_on_ray

    return execute_on_ray(input_path, options, address=address)
