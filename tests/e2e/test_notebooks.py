"""Every notebook under ``notebooks/`` runs top to bottom in a real kernel (nbclient).

A cell that raises fails the test. The notebooks need no account and no network: the
local solver, and the emulator on a loopback port. The run-panel notebook must also keep
its emulator key out of the saved file, outputs and widget state included.

The last tests check what a plain ``capbatch.run`` shows in a kernel: the notebook
widget bar, or a text bar when ipywidgets is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.e2e.runner_helpers import assert_key_absent

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 120
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytest.importorskip("ipykernel")


def kernel_env(tmp: Path) -> dict[str, str]:
    """This environment without provider keys (the notebooks must not need them), with
    the kernel's temp files (outputs, journals) under the test's own folder."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["TMPDIR"] = str(tmp)
    return env


def execute(nb: nbformat.NotebookNode, tmp: Path) -> nbformat.NotebookNode:
    """Run every cell with the notebooks' folder as working directory; raise on error."""
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute(env=kernel_env(tmp))
    return nb


def outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(str(v) for v in output.get("data", {}).values())
    return "".join(parts)


def test_there_are_notebooks_and_they_are_stored_without_outputs() -> None:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in paths] == [
        "01_quickstart.ipynb",
        "02_accuracy_report.ipynb",
        "03_run_panel.ipynb",
        "04_task_types.ipynb",
        "05_cascade.ipynb",
    ]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        assert "widgets" not in nb.metadata, f"{path.name} stores widget state"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_accuracy_report.ipynb"])
def test_notebook_runs_top_to_bottom(name: str, tmp_path: Path) -> None:
    pytest.importorskip("ddddocr")
    nb = execute(nbformat.read(NOTEBOOKS / name, as_version=4), tmp_path)
    executed = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in executed)


def test_run_panel_notebook_runs_and_keeps_the_key_out_of_the_file(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / "03_run_panel.ipynb", as_version=4)
    # A probe cell at the end tells us the key the notebook made; it is removed again
    # before the notebook is saved, as a user's notebook would be.
    probe = nbformat.v4.new_code_cell("print(key)")
    nb.cells.append(probe)
    execute(nb, tmp_path)
    key = probe.outputs[0]["text"].strip()
    assert len(key) == 32
    nb.cells.pop()

    saved = tmp_path / "03_run_panel.executed.ipynb"
    journals = list(tmp_path.rglob("*.journal.sqlite"))
    assert journals, "the panel's run should keep a journal"
    nbformat.write(nb, saved)
    text = saved.read_text(encoding="utf-8")
    assert key not in text
    assert "widgets" in nb.metadata  # the widget state was saved, and it is clean too
    assert_key_absent(key, roots=(tmp_path,))  # nor in the output, journal or temp files

    panel_cell = next(c for c in nb.cells if "panel = RunPanel(" in c.source)
    assert any(WIDGET_VIEW in o.get("data", {}) for o in panel_cell.outputs)
    status = next(c for c in nb.cells if "panel.wait(" in c.source)
    assert "finished: 240 solved" in outputs_text(status)


def test_task_types_notebook_scores_grids_and_sliders(tmp_path: Path) -> None:
    """Grids and sliders through the emulator with each type's default fields, their
    per-type reports, and the local solver's slider answers and one-line grid refusal."""
    pytest.importorskip("ddddocr")
    nb = nbformat.read(NOTEBOOKS / "04_task_types.ipynb", as_version=4)
    # The emulator corrupts 10 % of answers in arrival order, so which rows are wrong
    # may vary: the probe checks shares, not rows.
    probe = nbformat.v4.new_code_cell(
        "print(grid_results.status.eq('solved').all(), slider_results.status.eq('solved').all())\n"
        "print((grid_results.answer == grid_results.label).mean() >= 0.7)\n"
        "print(grid_results.solution.str.contains('\"objects\":').all())\n"
        "print(grid_report.summary.set_f1.iloc[0] > 0.8)\n"
        "print(slider_report.summary.distance_hit_rate.iloc[0] >= 0.7)\n"
        "print(comparison.summary.loc['local', 'distance_hit_rate'] > 0.3)"
    )
    nb.cells.append(probe)
    execute(nb, tmp_path)
    assert outputs_text(probe).split() == ["True"] * 7, outputs_text(probe)
    text = {c.id: outputs_text(c) for c in nb.cells if c.cell_type == "code" and "id" in c}
    assert "set_f1" in text["04_task_types-07"]
    assert "distance_hit_rate" in text["04_task_types-08"]
    refusal = text["04_task_types-11"].strip().splitlines()
    assert len(refusal) == 1 and refusal[0].startswith("local solver: "), refusal
    assert "grids.report.html" in text["04_task_types-13"]


def test_cascade_notebook_picks_a_threshold_and_runs_the_cascade(tmp_path: Path) -> None:
    """The local solver and the emulator's oracle over 90 labelled rows, the compare that
    picks the threshold, the cascade run with it (only unsure rows paid) and its report."""
    pytest.importorskip("ddddocr")
    nb = nbformat.read(NOTEBOOKS / "05_cascade.ipynb", as_version=4)
    probe = nbformat.v4.new_code_cell(
        "local_rows = cascade.provider == 'local'\n"
        "print(threshold == float(curve.recommended['threshold']))\n"
        "print(0 < local_rows.sum() < len(cascade))\n"
        "print((cascade.confidence[local_rows] >= threshold).all())\n"
        "print(stats['create_calls'] == (~local_rows).sum())\n"
        "print(abs(cascade.cost_usd.sum() - stats['charged_total']) < 1e-9)\n"
        "print(report.stages.index.tolist() == ['local stage', 'provider: capsolver'])\n"
        "print(report.gate is not None and curve.rows == 90)"
    )
    nb.cells.append(probe)
    execute(nb, tmp_path)
    assert outputs_text(probe).split() == ["True"] * 7, outputs_text(probe)
    text = {c.id: outputs_text(c) for c in nb.cells if c.cell_type == "code" and "id" in c}
    assert "Cascade: the local solver first" in text["05_cascade-09"]  # the drawn curve
    assert "--local-first 0." in text["05_cascade-10"]
    assert "Cascade stages" in text["05_cascade-15"]


def progress_notebook(*, without_ipywidgets: bool) -> nbformat.NotebookNode:
    first = "import sys\nsys.modules['ipywidgets'] = None" if without_ipywidgets else "pass"
    run = (
        "import tempfile\nfrom pathlib import Path\nimport capbatch\n"
        "frame = capbatch.run('../sample_data/captchas.parquet', provider='local', "
        "output=Path(tempfile.mkdtemp()) / 'out.parquet')"
    )
    cells = [nbformat.v4.new_code_cell(first), nbformat.v4.new_code_cell(run)]
    return nbformat.v4.new_notebook(cells=cells)


def test_plain_run_in_a_kernel_shows_the_notebook_widget_bar(tmp_path: Path) -> None:
    pytest.importorskip("ddddocr")
    nb = execute(progress_notebook(without_ipywidgets=False), tmp_path)
    outputs = nb.cells[1].outputs
    assert any(WIDGET_VIEW in o.get("data", {}) for o in outputs), outputs
    assert "widgets" in nb.metadata


def test_plain_run_in_a_kernel_without_ipywidgets_falls_back_to_a_text_bar(
    tmp_path: Path,
) -> None:
    pytest.importorskip("ddddocr")
    nb = execute(progress_notebook(without_ipywidgets=True), tmp_path)
    outputs = nb.cells[1].outputs
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in outputs), outputs
    text = outputs_text(nb.cells[1])
    assert "240/240" in text and "solved=240" in text
