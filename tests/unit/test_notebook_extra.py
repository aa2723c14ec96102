"""The ``notebook`` extra installs what opening and running the example notebooks needs
(issue 14, item 13), and the README says how to open them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_notebook_extra_has_jupyterlab_nbconvert_and_the_widgets() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0] for spec in extras["notebook"]}
    assert {"jupyterlab", "nbconvert", "ipywidgets", "ipykernel"} <= names
    # The dev install (the tests run the notebooks) pulls the notebook extra in.
    own = [spec for spec in extras["dev"] if spec.startswith("capbatch[")]
    assert len(own) == 1 and "notebook" in own[0][len("capbatch[") : -1].split(",")


def test_the_readme_says_how_to_open_the_notebooks() -> None:
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[notebook,local]"' in readme
    assert "jupyter lab notebooks/" in readme
    assert "jupyter nbconvert --to notebook --execute" in readme
