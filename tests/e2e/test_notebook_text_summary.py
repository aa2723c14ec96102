"""A run's widget bar leaves a text line in the cell, and the run panel keeps its last
run's summary for ``print(panel.summary.format())`` (issue 14, item 13): a notebook
executed headless saves widgets as first drawn (``0/N``), so the saved file shows the
run's end only through text."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, oracle, sample_frame
from tests.e2e.test_notebooks import WIDGET_VIEW, execute, outputs_text

pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

RUN = """
import tempfile
from pathlib import Path
import pandas as pd
import capbatch
frame = pd.read_parquet('../sample_data/captchas.parquet').head(4)
frame['image_path'] = ['../sample_data/' + p for p in frame['image_path']]
results = capbatch.run(frame, provider='local', output=Path(tempfile.mkdtemp()) / 'out.parquet')
"""


def test_a_headless_run_leaves_its_final_counts_as_text(tmp_path: Path) -> None:
    pytest.importorskip("ddddocr")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(RUN)])
    cell = execute(nb, tmp_path).cells[0]
    assert any(WIDGET_VIEW in o.get("data", {}) for o in cell.outputs), cell.outputs
    text = [o for o in cell.outputs if o.get("output_type") == "stream" and o.name == "stdout"]
    assert len(text) == 1, cell.outputs
    assert re.fullmatch(
        r"capbatch: 4/4 rows done: \d solved, \d failed; spend \$0\.0000; \d+\.\d s\n",
        text[0].text,
    ), text[0].text
    assert "4/4" in outputs_text(cell)


def test_the_run_panel_keeps_the_summary_text_of_its_last_run(
    tmp_path: Path, emulator: Callable[..., EmulatorHandle]
) -> None:
    from capbatch.widgets import RunPanel

    server = oracle(emulator, error_rate=0.0)
    frame = sample_frame(6)
    panel = RunPanel(
        frame,
        provider="capsolver",
        base_url=server.url,
        api_key=KEY,
        rate=100,
        journal=tmp_path / "panel.journal.sqlite",
    )
    assert panel.summary is None
    panel.start()
    panel.wait(timeout=60)
    assert panel.state == "finished" and panel.summary is not None
    text = panel.summary.format()
    assert text.splitlines()[0] == "rows 6: 6 solved, 0 failed"
    assert "accuracy 100.0% (6 of 6 labelled rows right; column 'label'" in text
