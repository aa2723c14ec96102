"""The package stays easy to read: small modules, short functions, the data path visible
in the tree (docs/architecture.md). The import layering itself is checked by
``lint-imports`` (the contracts in pyproject.toml) in the test command."""

from __future__ import annotations

import ast
from pathlib import Path

import capbatch

PACKAGE = Path(capbatch.__file__).parent
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
#: A function may be longer only if its docstring starts a paragraph with this and says why.
LONG_REASON = "Why this long:"

#: The stages of the data path, each a private subpackage (docs/architecture.md).
STAGES = ("_io", "_providers", "_run", "_reports", "_cli", "widgets", "emulator")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_stage_is_a_package_and_no_private_module_is_left_flat() -> None:
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file(), stage
    flat = {p.name for p in PACKAGE.glob("*.py")}
    # At the top: the public API, the CLI's entry point, the local solver, the one
    # exception tree, the version and the optional Ray API (capbatch.ray, its own
    # import so that `import capbatch` never imports Ray); everything else lives in
    # its stage.
    assert flat == {
        "__init__.py",
        "__main__.py",
        "_api.py",
        "_exceptions.py",
        "_version.py",
        "cli.py",
        "local.py",
        "ray.py",
    }, flat


def test_no_module_is_over_the_limit() -> None:
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
        for p in modules()
    }
    too_long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of each function over the limit whose docstring gives no reason."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if lines > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
            found.append((node.name, lines))
    return found


def test_no_function_is_over_the_limit_without_a_reason() -> None:
    offenders = {
        f"{p.relative_to(PACKAGE)}::{name}": n
        for p in modules()
        for name, n in long_functions(p.read_text(encoding="utf-8"))
    }
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines: {offenders}"


def test_the_function_check_finds_a_long_function_and_accepts_a_reason() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    plain = f"def f():\n    '''Doc.'''\n{body}\n"
    reasoned = f"def f():\n    '''Doc.\n\n    {LONG_REASON} a table.'''\n{body}\n"
    assert long_functions(plain) == [("f", MAX_FUNCTION_LINES + 2)]
    assert long_functions(reasoned) == []
