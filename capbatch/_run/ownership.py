"""Which input an output or a journal belongs to, and the default output's name.

A results file names the input it was made from (``capbatch.input`` in its run
metadata, and ``capbatch.input_relative``, its path from the results file's folder); a
journal does too (its ``input`` and ``input_relative`` meta entries, written by the
first run with an input file that opens it). Two inputs are one when they are the same
file, or when the input sits where it sat from the results file (or journal): a folder
moved or copied with its input, output and journal resumes (``same_input``).
``Workspace.open`` checks both before anything is sent: a run of another input file
stops with one line naming the way out (``-o``) instead of overwriting that input's
results or mixing its journal. In-memory tables are not checked: their journal is named
by their content.

The default output (``default_output_path``) of ``captchas.csv`` is
``captchas.csv.results.parquet`` beside it: the input's whole name, so inputs differing
only in their extension (``captchas.csv``, ``captchas.parquet``) never share results. An
output under the name earlier versions gave (``captchas.results.parquet``) that holds
this input's results is still used, so a run started before the change resumes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from capbatch._exceptions import ConfigError
from capbatch._io.outputs import run_metadata
from capbatch._run.journal import Journal

#: Journal meta keys: the input file (or folder) the journal's first run read, and its
#: path from the journal's folder.
INPUT_META, RELATIVE_META = "input", "input_relative"


def relative_input(source: Path, home: Path) -> str | None:
    """The path of the input ``source`` from the folder of ``home`` (an output or a
    journal), as recorded beside the absolute one; None where there is none (Windows
    drives)."""
    try:
        return os.path.relpath(source.resolve(), home.resolve().parent)
    except ValueError:
        return None


def default_output_path(source: Path) -> Path:
    """The default results file of the input file or folder ``source`` (module docstring,
    "Default names")."""
    path = Path(os.path.normpath(source))  # "images/" and "images/." name the folder
    new = path.with_name(f"{path.name}.results.parquet")
    legacy = path.with_name(f"{path.stem}.results.parquet")
    if new.exists() or legacy == new or not legacy.is_file():
        return new
    recorded, relative = recorded_input(legacy)
    mine = recorded is not None and same_input(recorded, relative, source=path, home=legacy)
    return legacy if mine else new


def recorded_input(output: Path) -> tuple[str | None, str | None]:
    """The input an existing results file says it was made from, absolute and relative
    (None if it says none, or cannot be read: then nothing is known to protect)."""
    try:
        meta = run_metadata(output)
    except (OSError, ValueError, pa.ArrowException, ConfigError):
        return None, None  # the writer will say what is wrong with the file
    return meta.get("capbatch.input") or None, meta.get("capbatch.input_relative")


def same_input(recorded: str, relative: str | None, *, source: Path, home: Path) -> bool:
    """Whether the recorded input (``recorded``, resolved; ``relative``, from the folder
    of ``home``, the output or journal that recorded it) and ``source`` are one input:
    the same file, or at the same place from ``home``. Files of older versions have no
    relative path: there the recorded input must be gone and have had the same name."""
    if same_file(Path(recorded), source):
        return True
    if relative is not None:
        return relative_input(source, home) == relative
    return not os.path.lexists(recorded) and Path(recorded).name == source.resolve().name


def check_same_input(
    what: str, home: Path, recorded: tuple[str | None, str | None], source: Path
) -> None:
    """``ConfigError`` when the output or journal ``home`` (``what``) belongs to another
    input than ``source``."""
    path, relative = recorded
    if path is None or same_input(path, relative, source=source, home=home):
        return
    raise ConfigError(
        f"the {what} {home} belongs to the input {path}, not {source.resolve()}: give "
        f"this input its own -o (or delete the {what} to start over)"
    )


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: one resolved path, or hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def journal_for_input(path: str, source: Path | None) -> Journal:
    """Open the journal; it must belong to ``source`` (the first run with an input file
    records it)."""
    journal = Journal(path)
    if source is None or path == ":memory:":
        return journal
    try:
        recorded = journal.get_meta(INPUT_META), journal.get_meta(RELATIVE_META)
        check_same_input("journal", Path(path), recorded, source)
        if recorded[0] is None:
            journal.set_meta(INPUT_META, str(source.resolve()))
            if (relative := relative_input(source, Path(path))) is not None:
                journal.set_meta(RELATIVE_META, relative)
    except BaseException:
        journal.close()
        raise
    return journal
