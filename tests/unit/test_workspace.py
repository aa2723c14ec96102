"""capbatch._run.workspace: path checks, output locks, stale temporaries, the cache folder."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from capbatch._exceptions import ConfigError, InUseError
from capbatch._io.inputs import TableSource
from capbatch._io.outputs import ResultWriter
from capbatch._io.record import RowResult
from capbatch._run.ownership import default_output_path, same_input
from capbatch._run.workspace import (
    CACHE_ENV,
    Workspace,
    cache_dir,
    check_distinct,
    check_writable,
    memory_journal,
    remove_stale_temporaries,
    table_digest,
)

SAFE_ADVICE = "wait for it to finish, or stop it; to run a different job use a different -o"


# --- the cache folder -----------------------------------------------------------------


def test_cache_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "capbatch"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "capbatch"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache_dir() == tmp_path / "home" / "Library" / "Caches" / "capbatch"


def frame(n: int = 300) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(n)], "image_path": [f"img/{i}.png" for i in range(n)]}
    )


def test_table_digest_is_content_only(tmp_path: Path) -> None:
    df = frame()
    base = table_digest(TableSource(df))
    # The same content, however it is held or batched, gives the same journal.
    assert table_digest(TableSource(df, batch_rows=7)) == base
    assert table_digest(TableSource(pa.Table.from_pandas(df, preserve_index=False))) == base
    assert table_digest(TableSource(df.copy())) == base
    changed = df.copy()
    changed.loc[150, "image_path"] = "img/other.png"
    assert table_digest(TableSource(changed)) != base
    assert table_digest(TableSource(df.iloc[:299])) != base
    journal = memory_journal(TableSource(df))
    assert journal.parent == cache_dir() / "journals" and "300rows" in journal.name


# --- path checks ----------------------------------------------------------------------


def test_check_writable_refuses_a_directory_and_a_file_for_a_folder(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(ConfigError, match="is a directory; give a file path"):
        check_writable(tmp_path / "d.parquet", "output")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="a file stands where its folder should be"):
        check_writable(tmp_path / "file" / "out.parquet", "output")
    check_writable(tmp_path / "new" / "deeper" / "out.parquet", "output")  # folders made
    assert (tmp_path / "new" / "deeper").is_dir()
    assert list((tmp_path / "new" / "deeper").iterdir()) == []  # the probe is gone


def test_check_distinct_sees_through_symlinks_relative_forms_and_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    out = tmp_path / "j.parquet"
    out.write_bytes(b"x")
    (tmp_path / "link.parquet").symlink_to(out)
    os.link(out, tmp_path / "hard.parquet")
    for journal in ("j.parquet", "./sub/../j.parquet", "link.parquet", "hard.parquet"):
        with pytest.raises(ConfigError, match="are the same file"):
            check_distinct(out, journal)
    with pytest.raises(ConfigError, match="same file"):
        check_distinct(Path("j.parquet-wal"), "j.parquet")
    check_distinct(out, "j.journal.sqlite")
    check_distinct(out, ":memory:")


# --- locks ----------------------------------------------------------------------------


def test_an_output_that_is_the_input_file_is_refused_before_it_is_touched(
    tmp_path: Path,
) -> None:
    table = tmp_path / "in.parquet"
    table.write_bytes(b"the user's table")
    (tmp_path / "link.parquet").symlink_to(table)
    for output in (table, tmp_path / "link.parquet", tmp_path / "." / "in.parquet"):
        with pytest.raises(ConfigError, match="is the input file: give -o another path"):
            Workspace.open(output, str(tmp_path / "j.sqlite"), source=table)
    assert table.read_bytes() == b"the user's table"
    assert not (tmp_path / "j.sqlite").exists()


def test_a_second_run_on_the_same_output_is_refused_whatever_its_journal(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    first = Workspace.open(out, str(tmp_path / "a.sqlite"))
    try:
        with pytest.raises(InUseError) as caught:
            Workspace.open(out, str(tmp_path / "b.sqlite"))
        message = str(caught.value)
        assert str(out) in message and SAFE_ADVICE in message and "--journal" not in message
        assert f"pid {os.getpid()}" in message
        # ... and a run on another output with the first run's journal is refused too.
        with pytest.raises(InUseError, match="the journal"):
            Workspace.open(tmp_path / "other.parquet", str(tmp_path / "a.sqlite"))
        assert not (tmp_path / "b.sqlite").exists()
    finally:
        first.close()
    again = Workspace.open(out, str(tmp_path / "b.sqlite"))  # free once the first is done
    again.close()
    # Lock files go with their run.
    assert not (tmp_path / ".out.parquet.lock").exists()
    assert not list((cache_dir() / "locks").iterdir())


def test_deleting_the_journal_and_the_lock_file_beside_the_output_frees_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.journal.sqlite"
    first = Workspace.open(out, str(journal))
    try:
        assert (tmp_path / ".out.parquet.lock") in first.lock_paths
        for path in (journal, Path(f"{journal}-wal"), tmp_path / ".out.parquet.lock"):
            path.unlink(missing_ok=True)
        with pytest.raises(InUseError, match=r"the output .* is in use"):
            Workspace.open(out, str(journal))
    finally:
        first.close()


def test_stale_temporaries_of_this_output_only_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    stale = [".out.csv.4242.tmp", ".out.csv.4242.3.tmp", ".out.csv.abcd_123.probe"]
    kept = [".other.csv.4242.tmp", "out.csv", ".out.csv.lock", ".out.csv.x.tmp", "notes.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    workspace = Workspace.open(out, str(tmp_path / "j.sqlite"))
    workspace.close()
    assert sorted(p.name for p in workspace.removed) == sorted(stale)
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & set(stale)
    assert set(kept) - {".out.csv.lock"} <= left
    assert remove_stale_temporaries(out) == []


# --- one input per output and journal (capbatch._run.ownership) ----------------------


def results_of(output: Path, source: Path) -> Path:
    """A results file that says it holds ``source``'s results (as a run writes it)."""
    with ResultWriter(output, pa.schema([("image", pa.string())])) as writer:
        writer.write(pa.record_batch({"image": ["a.png"]}), [RowResult(status="solved")])
        writer.finish({"capbatch.input": str(source.resolve()), "capbatch.run": "{}"})
    return output


def test_default_output_keeps_the_inputs_whole_name(tmp_path: Path) -> None:
    assert default_output_path(tmp_path / "captchas.csv") == (
        tmp_path / "captchas.csv.results.parquet"
    )
    assert default_output_path(tmp_path / "captchas.parquet") == (
        tmp_path / "captchas.parquet.results.parquet"
    )
    images = tmp_path / "images"
    images.mkdir()
    for given in (images, Path(f"{images}/"), images / "."):
        assert default_output_path(given) == tmp_path / "images.results.parquet"


def test_default_output_resumes_under_the_earlier_name(tmp_path: Path) -> None:
    """Before the whole-name rule the results of captchas.parquet were
    captchas.results.parquet: such a file of this input is still used."""
    parquet, csv = tmp_path / "captchas.parquet", tmp_path / "captchas.csv"
    parquet.write_bytes(b"x")
    csv.write_bytes(b"x")
    legacy = results_of(tmp_path / "captchas.results.parquet", parquet)
    assert default_output_path(parquet) == legacy
    assert default_output_path(csv) == tmp_path / "captchas.csv.results.parquet"
    # Once the new name exists, it wins.
    results_of(tmp_path / "captchas.parquet.results.parquet", parquet)
    assert default_output_path(parquet) == tmp_path / "captchas.parquet.results.parquet"


def test_an_output_of_another_input_stops_the_run(tmp_path: Path) -> None:
    first, other = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("image\nx.png\n")
    other.write_text("image\nx.png\n")
    out = results_of(tmp_path / "out.parquet", first)
    journal = str(tmp_path / "out.journal.sqlite")
    with pytest.raises(ConfigError) as info:
        Workspace.open(out, journal, source=other)
    message = str(info.value)
    assert message == (
        f"the output {out} belongs to the input {first}, not {other}: give this input "
        "its own -o (or delete the output to start over)"
    )
    assert not Path(journal).exists()  # refused before the journal was made
    # Its own input, and an in-memory table (its journal is named by its content), go on.
    Workspace.open(out, journal, source=first).close()
    Workspace.open(out, str(tmp_path / "mem.journal.sqlite"), source=None).close()


def test_a_journal_of_another_input_stops_the_run(tmp_path: Path) -> None:
    first, other = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("image\nx.png\n")
    other.write_text("image\nx.png\n")
    journal = str(tmp_path / "shared.journal.sqlite")
    Workspace.open(tmp_path / "a.parquet", journal, source=first).close()
    with pytest.raises(ConfigError, match=rf"the journal {journal} belongs to the input"):
        Workspace.open(tmp_path / "b.parquet", journal, source=other)
    # The lock files of the refused run are gone: the same input resumes at once.
    with Workspace.open(tmp_path / "a.parquet", journal, source=first) as workspace:
        assert workspace.journal.get_meta("input") == str(first.resolve())


def test_a_moved_or_copied_folder_still_resumes(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "in.csv").write_text("image\nx.png\n")
    (old / "other.csv").write_text("image\ny.png\n")
    journal = "in.csv.results.journal.sqlite"
    Workspace.open(old / "in.parquet", str(old / journal), source=old / "in.csv").close()
    # The input sits where it sat from the journal: a copy, then a move, resume.
    copy = Path(shutil.copytree(old, tmp_path / "copy"))
    Workspace.open(copy / "in.parquet", str(copy / journal), source=copy / "in.csv").close()
    new = old.rename(tmp_path / "new")
    Workspace.open(new / "in.parquet", str(new / journal), source=new / "in.csv").close()
    # Another file beside it is another input, the first one gone or not.
    for folder in (new, copy):
        with pytest.raises(ConfigError, match="belongs to the input"):
            Workspace.open(folder / "x.parquet", str(folder / journal), source=folder / "other.csv")


def test_old_records_without_a_relative_path(tmp_path: Path) -> None:
    """Files of older versions record only the absolute input: one that is gone counts
    as moved when the names match."""
    here = tmp_path / "in.csv"
    here.write_text("image\nx.png\n")
    gone = str(tmp_path / "elsewhere" / "in.csv")
    assert same_input(gone, None, source=here, home=tmp_path / "out.parquet")
    assert not same_input(str(tmp_path / "elsewhere" / "b.csv"), None, source=here, home=here)
    other = tmp_path / "b.csv"
    other.write_text("image\n")
    assert not same_input(str(other), None, source=here, home=here)
