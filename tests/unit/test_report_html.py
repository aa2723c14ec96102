"""The HTML report treats every answer, label and name as text, and needs no network.

The page is parsed with the stdlib ``HTMLParser``: hostile strings must come back only
as text nodes, never as elements, attributes or attribute values.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import capbatch
from capbatch._exceptions import RowInputError
from capbatch._reports import charts as _report_charts
from capbatch._reports import gallery as _report_gallery
from capbatch._reports import html as _report_html
from capbatch._reports.html import CSP

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
    monkeypatch.setattr(_report_gallery, "_THUMB_MAX_PIXELS", 1000)
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


# -- the templates ---------------------------------------------------------------------------

XSS = "<script>alert(\"x\")</script>' onload='y"
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39; onload=&#39;y"
PAGES = ("report.html", "report_fragment.html", "compare.html", "compare_fragment.html")


def template_context(full: bool) -> dict[str, object]:
    """A value for every name any template uses, each holding hostile text; ``full``
    picks one side of each choice a template makes (a table or none, an image or none)."""
    from capbatch._reports.html import Cell, Cost, Curve, Gallery, Group, Table, Tile
    from capbatch._reports.sections import Section

    grid = Table(
        [Cell(XSS), Cell(XSS, "num")],
        [[Cell(XSS, head=True), Cell(XSS, "num"), Cell(XSS, "ok", code=True, img=XSS)]],
        "metrics",
    )
    tiles = [Tile(XSS, XSS, XSS, XSS, XSS, XSS, XSS), Tile(None, XSS, None, None, None, XSS)]
    maybe = grid if full else None
    return {
        **dict.fromkeys(["title", "name", "names", "key", "matched", "more", "by_run"], XSS),
        **dict.fromkeys(["cost_chart", "csp", "version", "now", "scope", "gallery_title"], XSS),
        "needs_labels": XSS if full else "",
        "text": full,
        "typed": [Section(XSS, [(XSS, XSS)], XSS if full else None, XSS)],
        "latency": XSS if full else None,
        "meta": [XSS],
        "notes": [XSS],
        "headline": [(XSS, XSS)],
        "summary": grid,
        "pairs": grid,
        "cost": Cost(maybe, [(XSS, XSS)], XSS if full else ""),
        "groups": [Group(XSS, XSS if full else None, grid)],
        "errors": maybe,
        "confusions": maybe,
        "disagreements": maybe,
        "gallery": Gallery(tiles if full else [], XSS),
        "gate": maybe,
        "gate_title": XSS,
        "stages": maybe,
        "cascade": Curve(XSS, XSS, grid, XSS) if full else None,
    }


@pytest.mark.parametrize("full", [True, False])
def test_every_template_escapes_what_it_prints(full: bool) -> None:
    env = _report_html.environment()
    names = env.list_templates()
    assert set(PAGES) | {"base.html", "fragment.html", "macros.html", "style.css"} <= set(names)
    context = template_context(full)
    for name in names:
        out = env.get_template(name).render(context)
        assert "<script" not in out and "onload='" not in out, name
        if name != "macros.html":  # macros print nothing until called (the pages call them)
            assert ESCAPED in out or name == "fragment.html", name
        if name in PAGES:
            parsed = parse(out)
            assert "script" not in parsed.tags
            assert XSS in "".join(parsed.text), name
            assert not any(n.startswith("on") for n, _ in parsed.attributes)
    # Each macro, called on its own, escapes too.
    macros = env.get_template("macros.html").module
    every = ("table", "cards", "notes", "groups", "errors", "cost", "gallery", "typed", "needs")
    for macro in every:
        argument = {"table": "summary", "cards": "headline", "errors": "summary",
                    "needs": "needs_labels"}.get(macro, macro)  # fmt: skip
        out = str(getattr(macros, macro)(context[argument]))
        assert "<script" not in out and (ESCAPED in out or not full), macro


def test_the_environment_escapes_and_refuses_missing_names() -> None:
    import jinja2

    env = _report_html.environment()
    assert env is _report_html.environment()  # built once
    assert env.autoescape is True  # every template, whatever its file name
    assert env.undefined is jinja2.StrictUndefined
    context = template_context(True)
    del context["gallery"]
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("report.html").render(context)
    assert env.from_string("{{ x }}").render(x='<b a="1">') == "&lt;b a=&#34;1&#34;&gt;"


def test_nothing_is_marked_safe() -> None:
    for path in _report_html.TEMPLATES.iterdir():
        text = path.read_text(encoding="utf-8").replace(" ", "")
        assert "|safe" not in text and "autoescapefalse" not in text, path
    for module in (_report_html, _report_charts):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        assert "Markup" not in source and "markupsafe" not in source, module


def test_values_that_claim_to_be_html_are_escaped(tmp_path: Path) -> None:
    from markupsafe import Markup

    class Claims:  # any object with __html__ would be trusted by Jinja2 as it is
        def __html__(self) -> str:
            return "<script>alert(8)</script>"

        def __str__(self) -> str:
            return "<script>alert(8)</script>"

    hostile = Markup("<script>alert(7)</script>")
    frame = pd.DataFrame(
        {"id": [hostile, Claims()], "label": ["ab", "cd"], "answer": ["xx", hostile]}
    )
    page = capbatch.report(frame).to_html()
    assert_only_text(page, [])
    assert "<script>alert(7)</script>" in "".join(parse(page).text)
    assert "<script>alert(8)</script>" in "".join(parse(page).text)


def test_templates_ship_in_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")
    root = Path(_report_html.__file__).parents[2]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    if not (root / "pyproject.toml").is_file() or "tool" not in pyproject:
        pytest.skip("not a source checkout")
    patterns = pyproject["tool"]["setuptools"]["package-data"]["capbatch"]
    shipped = {p for pattern in patterns for p in Path(root / "capbatch").glob(pattern)}
    assert set(_report_html.TEMPLATES.iterdir()) <= shipped
    assert any(d.startswith("jinja2") for d in pyproject["project"]["dependencies"])


def test_importing_the_module_does_not_import_jinja2() -> None:
    import subprocess
    import sys

    code = "import sys, capbatch._reports.html; assert 'jinja2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- what the page shows per answer type, without labels, on free runs ----------------------


def cards_of(page: str) -> dict[str, str]:
    """The headline cards of a page: name -> value."""
    found = re.findall(
        r'<div class="card"><div class="value">([^<]*)</div><div class="name">([^<]*)</div>', page
    )
    return {name: value for value, name in found}


def test_one_kind_names_its_accuracy_instead_of_showing_it_twice() -> None:
    frame = pd.DataFrame(
        {
            "label": ["120", "80"],
            "answer": ["121", "90"],
            "status": "solved",
            "solution": ['{"distance": 121}', '{"distance": 90}'],
        }
    )
    page = capbatch.report(frame).to_html()
    cards = cards_of(page[: page.index('<div class="cols">')])  # the headline only
    assert cards["accuracy (distance within tolerance)"] == "50.0 %"
    assert "distance within tolerance" not in cards
    assert cards["distance error p50"] == "5.5 px"  # errors 1 and 10


def test_headline_shows_exact_accuracy_beside_the_case_insensitive_one() -> None:
    frame = pd.DataFrame(
        {
            "label": ["Ab", "cd", "ef", "gh"],
            "answer": ["ab", "cd", "EF", "xx"],
            "status": "solved",
            "cost_usd": 0.001,
        }
    )
    first = cards_of(capbatch.report(frame).to_html())
    assert first["accuracy (case-insensitive)"] == "75.0 %"  # ab, cd, EF
    assert first["exact accuracy (case-sensitive)"] == "25.0 %"  # cd
    assert "case-insensitive accuracy" not in first  # never the same number twice
    strict = cards_of(capbatch.report(frame, case_sensitive=True).to_html())
    assert strict["accuracy (case-sensitive)"] == "25.0 %"
    assert strict["case-insensitive accuracy"] == "75.0 %"
    assert "exact accuracy (case-sensitive)" not in strict
    assert strict["cost per 1,000 rows"] == "$1.00"


def test_a_run_that_cost_nothing_shows_time_instead_of_zero_cost_cards() -> None:
    frame = pd.DataFrame(
        {
            "label": ["ab", "cd", "ef", "gh"],
            "answer": ["ab", "cd", None, "gh"],
            "status": ["solved", "solved", "failed", "solved"],
            "cost_usd": 0.0,
            "latency_ms": [100.0, 200.0, 300.0, 400.0],
            "submitted_at": pd.Timestamp("2026-01-01T00:00:00Z"),
            "finished_at": pd.Timestamp("2026-01-01T00:00:02Z"),
        }
    )
    page = capbatch.report(frame).to_html()
    cards = cards_of(page)
    assert not any(name.startswith("cost") for name in cards)
    assert cards["rows solved (no cost recorded)"] == "3 of 4"
    assert cards["latency p99"] == "397 ms"  # 300 + 0.97 x 100
    # The cost section: 4 rows sent over 2 s, 0.5 s a row.
    assert cards["throughput"] == "2.0 rows/s"
    assert cards["time per row (run time / rows sent)"] == "500 ms"
    assert "No cost recorded" in "".join(parse(page).text)


def test_page_without_labels_says_accuracy_needs_them() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "image_b64": [base64.b64encode(png(i)).decode() for i in (1, 2)],
            "answer": ["k7mq", None],
            "status": ["solved", "failed"],
            "error_code": [None, "ERROR_ZERO_BALANCE"],
            "cost_usd": [0.001, 0.0],
        }
    )
    rep = capbatch.report(frame)
    page = rep.to_html()
    text = "".join(parse(page).text)
    assert "Accuracy needs labels" in text and "Failed rows" in text
    assert "ERROR_ZERO_BALANCE" in text
    cards = cards_of(page)
    assert cards["failed rows"] == "1" and cards["solved rate"] == "50.0 %"
    assert not any("accuracy" in name for name in cards)
    assert base64.b64encode(png(2)).decode() in page  # the failed row's image, as is
    assert base64.b64encode(png(1)).decode() not in page
    assert rep.to_dict()["label_column"] is None
    assert "Accuracy needs labels" in rep._repr_html_()


def test_compare_without_labels_and_with_drawn_answers(tmp_path: Path) -> None:
    Image.new("RGB", (90, 90), (240, 240, 240)).save(tmp_path / "g.png")
    base = {"id": ["a", "b"], "image_path": ["g.png", "g.png"], "status": "solved"}
    one = pd.DataFrame({**base, "answer": ["0", "4"], "solution": ['{"objects": [0]}'] * 2})
    two = pd.DataFrame({**base, "answer": ["0", "8"], "solution": ['{"objects": [0]}'] * 2})
    c = capbatch.compare(one, two, names=["one", "two"], base_dir=tmp_path)
    assert not c.has_labels and c.kinds == ["objects"]
    assert "accuracy" not in c.columns() and "solved_rate" in c.columns()
    page = c.to_html()
    assert "Accuracy needs labels" in "".join(parse(page).text)
    table = page[page.index("Rows where the runs disagree") :]
    drawn = [
        Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB")
        for u in re.findall(r'src="data:image/png;base64,([^"]+)"', table)
    ]
    # Row b, each run's answer on the image: tile 4 (centre) for one, tile 8 for two,
    # outlined in red (chosen; no label to say it is right).
    assert len(drawn) == 2
    assert drawn[0].getpixel((32, 45)) == (215, 48, 39) and drawn[0].getpixel((62, 75)) != (
        215, 48, 39)  # fmt: skip
    assert drawn[1].getpixel((62, 75)) == (215, 48, 39)


def test_typed_sections_on_the_page() -> None:
    frame = pd.DataFrame(
        {
            "label": ["[0,0,10,10]", "[0,0,10,10]", "90"],
            "answer": ["0,0,10,5", "20,20,30,30", "100"],
            "status": "solved",
            "solution": ['{"box": [0, 0, 10, 5]}', '{"box": [20, 20, 30, 30]}', '{"angle": 100}'],
        }
    )
    rep = capbatch.report(frame, iou_threshold=0.4, tolerance=10)
    page = rep.to_html()
    text = "".join(parse(page).text)
    assert "Boxes" in text and "Angles (rotations)" in text
    assert "IoU at least 0.4 (--iou-threshold)" in text
    assert "at most 10° (--tolerance)" in text
    assert "tolerance: 10°" in text and "IoU threshold: 0.4" in text  # the run line
    cards = cards_of(page)  # two kinds: accuracy, then each kind's key metrics
    assert cards["accuracy"] == "66.7 %"
    assert cards["IoU at or above threshold"] == "50.0 %"
    assert cards["mean IoU"] == "0.250"
    assert rep.metrics()["box_hit_rate"] == pytest.approx(1 / 2)  # IoU 0.5 and 0
    assert rep.metrics()["angle_hit_rate"] == 1.0
    assert "character error rate" not in text  # no text answers: no CER


def test_accuracy_charts_never_draw_the_same_number_twice() -> None:
    from capbatch._reports.html import accuracy_columns

    sets = pd.DataFrame(
        {"label": ["1", "2"], "answer": ["1", "3"], "status": "solved",
         "solution": ['{"objects": [1]}', '{"objects": [3]}']}
    )  # fmt: skip
    # One kind: accuracy is its exact set match, so the chart shows the other rates.
    assert accuracy_columns(capbatch.report(sets)) == [
        "accuracy", "set_precision", "set_recall", "set_f1"]  # fmt: skip
    mixed = pd.DataFrame(
        {"label": ["ab", "2"], "answer": ["AB", "3"], "status": "solved",
         "solution": ['{"text": "AB"}', '{"distance": 3}']}
    )  # fmt: skip
    assert accuracy_columns(capbatch.report(mixed)) == [
        "accuracy", "exact_accuracy", "distance_hit_rate"]  # fmt: skip
    strict = capbatch.report(mixed, case_sensitive=True)
    assert accuracy_columns(strict) == ["accuracy", "ci_accuracy", "distance_hit_rate"]
    assert accuracy_columns(capbatch.report(mixed.drop(columns="label"))) == ["solved_rate"]


def test_comparison_has_a_section_per_kind_and_the_notebook_view_too() -> None:
    def run(answers: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "id": ["a", "b", "c"],
                "label": ["[1,2]", "100", "50"],
                "answer": answers,
                "status": "solved",
                "solution": ['{"objects": [1]}', '{"distance": 1}', '{"distance": 1}'],
            }
        )

    c = capbatch.compare(run(["1,2", "103", "50"]), run(["1", "120", "50"]), names=["a", "b"])
    page = c.to_html()
    text = "".join(parse(page).text)
    assert "Object sets (tiles)" in text and "Distances (slider offsets)" in text
    assert "at most 5 px (--tolerance)" in text
    summary = c.summary
    assert summary.loc["a", "distance_hit_rate"] == 1.0  # errors 3 and 0
    assert summary.loc["b", "distance_hit_rate"] == 0.5  # errors 20 and 0
    assert summary.loc["b", "set_recall"] == 0.5
    fragment = capbatch.report(run(["1,2", "103", "50"]))._repr_html_()
    assert "Distances (slider offsets)" in fragment
