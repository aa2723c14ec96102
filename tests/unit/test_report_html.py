"""The HTML report treats every answer, label and name as text, and needs no network.

The page is parsed with the stdlib ``HTMLParser``: hostile strings must come back only
as text nodes, never as elements, attributes or attribute values.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import capbatch
from capbatch import _report_html
from capbatch._exceptions import RowInputError
from capbatch._report_html import CSP

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "' onmouseover='alert(3)",
    "</style><script>alert(4)</script>",
    "<!-- x --><svg onload=alert(5)>",
    "$\\frac{1}{0}$ &amp; $$",  # TeX for matplotlib, an entity for the browser
    "javascript:alert(6)",
]
ALLOWED_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "main",
    "footer",
    "h1",
    "h2",
    "h3",
    "p",
    "span",
    "div",
    "ul",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "img",
    "figure",
    "figcaption",
    "code",
    "section",
}
ALLOWED_ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "name", "class", "alt", "src"}


class Page(HTMLParser):
    """Collects elements, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (60, 20), (shade, 200, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def hostile_results(tmp_path: Path) -> Path:
    """A Parquet results table with hostile text in every place text can be."""
    (tmp_path / "one.png").write_bytes(png(10))
    n = len(HOSTILE)
    frame = pd.DataFrame(
        {
            "id": HOSTILE,
            "image_path": ["one.png"] + ["missing.png"] * (n - 1),
            "label": HOSTILE,
            "answer": [h[::-1] for h in HOSTILE[:-1]] + [None],
            "style": HOSTILE,
            "status": ["solved"] * (n - 1) + ["failed"],
            "error_code": [None] * (n - 1) + [HOSTILE[0]],
            "error_message": [None] * (n - 1) + [HOSTILE[1]],
            "latency_ms": [float(10 * i + 5) for i in range(n)],
            "cost_usd": [0.001] * n,
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    settings = {"rate": 5, "task_params": {"module": HOSTILE[0]}}
    table = table.replace_schema_metadata(
        {
            "capbatch.provider": HOSTILE[1],
            "capbatch.task_type": HOSTILE[0],
            "capbatch.settings": json.dumps(settings),
            "capbatch.run": json.dumps({"rows": n + 1, "stopped_by": HOSTILE[2]}),
        }
    )
    path = tmp_path / "hostile.results.parquet"
    pq.write_table(table, path)
    return path


def assert_only_text(page: str, expected: list[str]) -> Page:
    parsed = parse(page)
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    assert "script" not in parsed.tags
    assert parsed.comments == []
    names = {name for name, _ in parsed.attributes}
    assert names <= ALLOWED_ATTRIBUTES, names - ALLOWED_ATTRIBUTES
    assert not any(name.startswith("on") for name in names)
    for name, value in parsed.attributes:
        if name == "src":
            assert value.startswith(("data:image/png;base64,", "data:image/"))
        for hostile in HOSTILE:
            assert hostile not in value
    text = "".join(parsed.text)
    for hostile in expected:
        assert hostile in text, hostile
    return parsed


def test_hostile_strings_are_only_text_in_the_report_page(
    hostile_results: Path, tmp_path: Path
) -> None:
    rep = capbatch.report(hostile_results, by="style")
    out = tmp_path / "report.html"
    page = rep.to_html(out)
    assert out.read_text(encoding="utf-8") == page
    parsed = assert_only_text(page, HOSTILE)
    assert ("content", CSP) in parsed.attributes
    assert ("http-equiv", "Content-Security-Policy") in parsed.attributes
    # The one image that exists is embedded; the others show a placeholder.
    images = [v for k, v in parsed.attributes if k == "src" and "base64" in v]
    embedded = [base64.b64decode(v.split(",", 1)[1]) for v in images]
    assert png(10) in embedded
    assert "image not available" in "".join(parsed.text)


def test_hostile_strings_are_only_text_in_the_notebook_view(hostile_results: Path) -> None:
    assert_only_text(capbatch.report(hostile_results, by="style")._repr_html_(), HOSTILE[:3])


def test_hostile_strings_are_only_text_in_the_comparison(hostile_results: Path) -> None:
    cmp = capbatch.compare(hostile_results, hostile_results, names=HOSTILE[:2], by="style")
    assert_only_text(cmp.to_html(), HOSTILE[:2])
    assert_only_text(cmp._repr_html_(), HOSTILE[:2])


def test_page_is_self_contained(hostile_results: Path) -> None:
    page = capbatch.report(hostile_results).to_html()
    parsed = parse(page)
    assert "link" not in parsed.tags and "iframe" not in parsed.tags
    for name, value in parsed.attributes:
        assert ("http:" not in value and "https:" not in value) or name == "content"
    assert "url(" not in page


def test_page_shows_the_report(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "image_b64": [base64.b64encode(png(i)).decode() for i in (1, 2, 3)],
            "label": ["k7mq", "xy2z", "pqrs"],
            "answer": ["k7mq", "xy22", None],
            "status": ["solved", "solved", "failed"],
            "error_code": [None, None, "ERROR_CAPTCHA_UNSOLVABLE"],
            "latency_ms": [10.0, 20.0, None],
            "cost_usd": [0.0004, 0.0004, 0.0],
        }
    )
    page = capbatch.report(frame).to_html()
    text = "".join(parse(page).text)
    for expected in (
        "33.3 %",
        "accuracy",
        "ERROR_CAPTCHA_UNSOLVABLE",
        "latency p95",
        "cost per correct answer",
        "$0.0008",
        "xy22",
    ):
        assert expected in text, expected
    # Wrong answers first, then failed rows: images of rows b and c are in the gallery.
    for shade in (2, 3):
        assert base64.b64encode(png(shade)).decode() in page
    assert base64.b64encode(png(1)).decode() not in page  # row a is right


def test_gallery_bounds_what_it_reads_and_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as fh:  # a PNG signature, then a sparse 6 MB
        fh.write(png(1))
        fh.truncate(6 * 1024 * 1024)
    # A small BMP (not embedded as is) whose bitmap is over the decoding bound.
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 9, 9)).save(buffer, "BMP")
    (tmp_path / "wide.bmp").write_bytes(buffer.getvalue())
    monkeypatch.setattr(_report_html, "_THUMB_MAX_PIXELS", 1000)
    (tmp_path / "ok.png").write_bytes(png(2))
    frame = pd.DataFrame(
        {
            "image_path": ["big.png", "wide.bmp", "ok.png", "gone.png"],
            "label": ["a", "b", "c", "d"],
            "answer": ["x", "y", "z", "w"],
        }
    )
    rep = capbatch.report(frame, base_dir=tmp_path)
    with pytest.raises(RowInputError) as info:
        rep.image("big.png")
    assert info.value.error_code == "INPUT_TOO_LARGE"
    assert str(6 * 1024 * 1024) in info.value.message
    page = rep.to_html()
    text = "".join(parse(page).text)
    assert text.count("image too large to show") == 2
    assert text.count("image not available") == 1
    assert base64.b64encode(png(2)).decode() in page
