"""The public API is exactly ``capbatch.__all__``, kept sorted (after httpx's test); every
public class and function says it lives in ``capbatch``; importing ``capbatch`` or
``capbatch.cli`` loads none of the heavy dependencies (names resolve on first use)."""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from types import FunctionType, ModuleType

import capbatch
from capbatch import _exceptions
from capbatch._run import batches as _runner
from tests.fakes import HEAVY_MODULES

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


#: The exported names that are neither classes nor functions.
CONSTANTS = {"PROVIDERS", "RESULT_COLUMNS", "__version__"}

#: What ``import capbatch`` and ``import capbatch.cli`` must not load.
HEAVY = HEAVY_MODULES


def _public_members() -> set[str]:
    # Names resolve lazily: bind them all first, so vars() holds every one.
    for name in capbatch.__all__:
        getattr(capbatch, name)
    # Submodules (capbatch.local, capbatch.cli, ...) appear in vars() once something
    # imports them; they are reached by their dotted name, not through __all__.
    return {
        name
        for name, value in vars(capbatch).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and not isinstance(value, ModuleType)
    }


def test_all_is_sorted() -> None:
    assert capbatch.__all__ == sorted(capbatch.__all__), (
        "capbatch.__all__ is not in sorted() order (ruff's RUF022 isort-style order puts "
        f"PROVIDERS first); expected {sorted(capbatch.__all__)}"
    )


def test_all_has_no_duplicates() -> None:
    assert len(set(capbatch.__all__)) == len(capbatch.__all__)


def test_every_public_member_is_exported() -> None:
    missing = _public_members() - set(capbatch.__all__)
    assert not missing, f"public names missing from __all__: {sorted(missing)}"


def test_every_exported_name_exists() -> None:
    absent = [name for name in capbatch.__all__ if not hasattr(capbatch, name)]
    assert not absent, f"names in __all__ that capbatch does not define: {absent}"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from capbatch import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(capbatch.__all__)


def test_exported_classes_and_functions_say_they_live_in_capbatch() -> None:
    for name in capbatch.__all__:
        value = getattr(capbatch, name)
        if name in CONSTANTS:
            assert not isinstance(value, (type, FunctionType)), name
        else:
            assert isinstance(value, (type, FunctionType)), name
            assert value.__module__ == "capbatch", f"{name} says it lives in {value.__module__}"


def test_a_traceback_names_the_public_class() -> None:
    line = traceback.format_exception_only(capbatch.AuthError("bad key"))[-1]
    assert line == "capbatch.AuthError: bad key\n"
    assert _exceptions.AuthError is capbatch.AuthError
    assert _runner.RunAborted is capbatch.RunAborted


def test_every_name_resolves_to_the_object_its_private_module_defines() -> None:
    for name, module in capbatch._LAZY.items():
        public = getattr(capbatch, name)  # loads the private module on first use
        private = sys.modules[f"capbatch{module}"]
        assert public is getattr(private, name), name
    assert set(capbatch._LAZY) | set(vars(_exceptions)) >= set(capbatch.__all__)
    assert set(capbatch.__all__) <= set(dir(capbatch))


def _fresh(code: str) -> object:
    """Run ``code`` in a fresh interpreter; it prints one JSON value."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout)


def test_importing_capbatch_or_its_cli_loads_no_heavy_module() -> None:
    for module in ("capbatch", "capbatch.cli"):
        loaded = _fresh(
            f"import json, sys, {module}; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
        )
        assert loaded == [], f"import {module} loads {loaded}"


def test_a_name_used_first_claims_the_others_its_module_loaded() -> None:
    # Touch capbatch.run only: RunAborted (in _run.batches, which _api imports) says capbatch
    # too, so an error a run raises reads capbatch.RunAborted in the traceback.
    claimed = _fresh(
        "import json, capbatch; capbatch.run; from capbatch._run.batches import RunAborted; "
        "from capbatch._run.summary import RunSummary; "
        "print(json.dumps([RunAborted.__module__, RunSummary.__module__]))"
    )
    assert claimed == ["capbatch", "capbatch"]
