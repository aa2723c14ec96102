"""The public API is exactly ``capbatch.__all__``, kept sorted (after httpx's test)."""

from __future__ import annotations

from types import ModuleType

import capbatch

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def _public_members() -> set[str]:
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


def test_exported_objects_say_where_they_live() -> None:
    for name in capbatch.__all__:
        value = getattr(capbatch, name)
        module = getattr(value, "__module__", None)
        if module is not None and isinstance(value, type):
            assert module.startswith("capbatch"), f"{name} comes from {module}"
