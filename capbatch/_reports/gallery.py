"""Images in the HTML report: thumbnails as ``data:`` URIs, and the gallery of wrong
answers (or, without labels, of failed rows) with each answer drawn on its image.

An image is read through ``Report.image`` (bounded in bytes, regular files only) and,
unless it is a small PNG, JPEG, GIF or WebP shown as is, decoded by Pillow under
``pillow_guard`` with its pixels bounded. For answers other than text the answer and
the label are drawn on the image (``draw``): the tiles of a grid (3x3, or 4x4 when an
index is 9 or more; tiles chosen and right in green, chosen and wrong in red, missed
in blue), the slider offset as a vertical line (label green, answer red; on the
background image when the table has one), a box or point (label green, answer red)
and a rotation as a line from the centre, clockwise from the top.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from capbatch._exceptions import RowInputError
from capbatch._io.images import INPUT_TOO_LARGE, INPUT_TRUNCATED_IMAGE, image_format
from capbatch._io.labels import parse
from capbatch._io.pillow_checks import pillow_guard, pixel_error
from capbatch._reports import metrics as _metrics
from capbatch._reports.charts import MISSED, RIGHT, WRONG
from capbatch._reports.metrics import missing, shown

if TYPE_CHECKING:
    from PIL import ImageDraw

    from capbatch._reports.report import Report

GALLERY_LIMIT = 48
_THUMB = (320, 120)
_DRAWN = (240, 240)  # a drawn answer needs the image large enough to read it
_EMBED_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_MAX_EMBED_BYTES = 256 * 1024
_THUMB_MAX_PIXELS = 16_000_000  # 64 MB as RGBA while the thumbnail is made
GRID = "#9aa3ab"
#: What the colours drawn on each kind of answer mean (shown under the image).
LEGENDS = {
    "objects": "green: chosen, right · red: chosen, wrong · blue: missed",
    "distance": "green line: label · red line: answer",
    "angle": "green: label · red: answer (clockwise from the top)",
    "point": "green: label · red: answer",
    "box": "green: label · red: answer",
}
#: Columns that may hold a slider's background, where the offset is drawn.
BACKGROUND_COLUMNS = ("background_path", "background", "image_background", "imageBackground")


class Tile(NamedTuple):
    """One wrong answer (or failed row) in the gallery."""

    src: str | None  # the image as a data: URI, or None and why there is none
    why: str
    who: str | None  # the row's id, if the table has an id column
    label: str | None  # None when the table has no labels
    answer: str | None  # None when the row has no answer, then the error code
    code: str
    legend: str = ""  # what the colours drawn on the image mean, "" if nothing is drawn


class Gallery(NamedTuple):
    tiles: list[Tile]
    more: str  # how many rows are left out, "" if none


class Drawing(NamedTuple):
    """An answer and its label to draw on the image (either may be None)."""

    kind: str
    answer: Any
    label: Any


def thumbnail(report: Report, value: Any) -> str | None:
    """A ``data:`` URI of the image a cell stands for, or None when it cannot be read."""
    try:
        return _thumbnail_uri(report, value)
    except RowInputError:
        return None


def picture(report: Report, value: Any, drawing: Drawing | None = None) -> tuple[str | None, str]:
    """The gallery's image as a ``data:`` URI, or None and why there is none."""
    try:
        return _thumbnail_uri(report, value, drawing), ""
    except RowInputError as exc:
        too_large = exc.error_code == INPUT_TOO_LARGE
        return None, "image too large to show" if too_large else "image not available"


def _thumbnail_uri(report: Report, value: Any, drawing: Drawing | None = None) -> str:
    # report.image reads at most MAX_IMAGE_BYTES, and refuses FIFOs and devices unopened.
    data = report.image(value)
    mime = _EMBED_AS_IS.get(image_format(data) or "")
    if drawing is not None or mime is None or len(data) > _MAX_EMBED_BYTES:
        from PIL import Image

        try:
            with pillow_guard(), Image.open(io.BytesIO(data)) as image:
                # A small file can still decode to a huge bitmap (PNG compresses a plain
                # area to almost nothing): bound what thumbnail() decodes.
                if image.width * image.height > _THUMB_MAX_PIXELS:
                    pixels = f"{image.width}x{image.height} pixels"
                    raise RowInputError(f"{pixels}, too many", error_code=INPUT_TOO_LARGE)
                picture = image.convert("RGBA")
                if drawing is not None:
                    draw(picture, drawing)
                picture.thumbnail(_THUMB if drawing is None else _DRAWN)
                buffer = io.BytesIO()
                picture.save(buffer, "PNG")
        except RowInputError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, bomb warnings...
            code = INPUT_TOO_LARGE if pixel_error(exc) else INPUT_TRUNCATED_IMAGE
            raise RowInputError(str(exc), error_code=code) from None
        data, mime = buffer.getvalue(), "image/png"
    # A fixed MIME type and base64: nothing in it that escaping would change. It is not
    # marked safe all the same: the template escapes it into the src attribute.
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# -- drawing answers ----------------------------------------------------------------------


def draw(image: Any, drawing: Drawing) -> None:
    """Draw ``drawing``'s label and answer on ``image`` (a Pillow RGBA image), in place."""
    from PIL import ImageDraw

    pen = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 80))
    kind, answer, label = drawing
    if kind == "objects":
        _tiles(pen, image.size, answer or frozenset(), label or frozenset(), width)
        return
    for value, colour in ((label, RIGHT), (answer, WRONG)):
        if value is None:
            continue
        if kind == "distance":
            x = float(value)
            pen.line([(x, 0), (x, image.height)], fill=colour, width=width)
        elif kind == "box":
            x1, x2 = sorted((value[0], value[2]))
            y1, y2 = sorted((value[1], value[3]))
            pen.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        elif kind == "point":
            r = 3 * width
            pen.ellipse([value[0] - r, value[1] - r, value[0] + r, value[1] + r], outline=colour,
                        width=width)  # fmt: skip
        elif kind == "angle":
            cx, cy, r = image.width / 2, image.height / 2, min(image.size) / 2 - width
            turn = math.radians(float(value))
            end = (cx + r * math.sin(turn), cy - r * math.cos(turn))
            pen.line([(cx, cy), end], fill=colour, width=width)


def _tiles(
    pen: ImageDraw.ImageDraw,
    size: tuple[int, int],
    answer: frozenset[int],
    label: frozenset[int],
    width: int,
) -> None:
    """A grid over the image, the tiles outlined by whether they were chosen and right."""
    n = 4 if max(answer | label, default=0) >= 9 else 3
    w, h = size[0] / n, size[1] / n
    for i in range(1, n):
        pen.line([(i * w, 0), (i * w, size[1])], fill=GRID, width=1)
        pen.line([(0, i * h), (size[0], i * h)], fill=GRID, width=1)
    for index in sorted(answer | label):
        if index >= n * n:
            continue
        colour = (RIGHT if index in label else WRONG) if index in answer else MISSED
        row, col = divmod(index, n)
        box = [col * w + width, row * h + width, (col + 1) * w - width, (row + 1) * h - width]
        pen.rectangle(box, outline=colour, width=width)


# -- the gallery ---------------------------------------------------------------------------


def chosen_rows(report: Report, limit: int) -> tuple[np.ndarray, int]:
    """The rows the gallery shows (wrong answers, then failed rows; without labels the
    failed rows), at most ``limit``, and how many such rows there are in all."""
    if not report.has_labels:
        rows = report.failed_rows()
        return rows[:limit], len(rows)
    wrong = report.wrong_rows()
    answered = _metrics.flag(report.scored["answer"].iloc[wrong].str.len() > 0)
    return np.concatenate([wrong[answered], wrong[~answered]])[:limit], len(wrong)


def _background_column(report: Report) -> str | None:
    """The column holding a slider's background image, if the table has one."""
    fields = (report.run.get("settings") or {}).get("fields")
    named = fields.get("imageBackground") if isinstance(fields, dict) else None
    candidates = [named, *BACKGROUND_COLUMNS]
    return next((c for c in candidates if isinstance(c, str) and c in report.results), None)


def drawing_of(report: Report, at: int) -> Drawing | None:
    """What to draw on row ``at``'s image (None for text and yes/no answers)."""
    kind = str(report.scored["kind"].iloc[at])
    if kind not in LEGENDS:
        return None
    answer = report.results["answer"].iloc[at]
    label = report.labels.iloc[at] if report.labels is not None else None
    return Drawing(kind, parse(kind, answer), parse(kind, label))


def gallery(report: Report, limit: int = GALLERY_LIMIT) -> Gallery:
    """Wrong answers first, then failed rows (without labels: failed rows): the image
    with the answer drawn on it, the label and the answer of each."""
    chosen, total = chosen_rows(report, limit)
    if chosen.size == 0:
        return Gallery([], "")
    rows = report.results.iloc[chosen]
    id_column = _id_column(rows)
    background = _background_column(report)
    tiles = []
    for i, at in enumerate(chosen):
        drawing = drawing_of(report, int(at))
        column = background if drawing and drawing.kind == "distance" else None
        column = column or report.image_column
        src, why = picture(report, rows[column].iloc[i], drawing) if column else (None, "")
        answer = rows["answer"].iloc[i]
        no_answer = missing(answer) or not str(answer).strip()
        if drawing is not None and drawing.kind == "objects" and not missing(answer):
            no_answer = False  # "" is the empty set: an answer
        code = rows["error_code"].iloc[i] if no_answer and "error_code" in rows.columns else None
        label = report.labels.iloc[at] if report.labels is not None else None
        tiles.append(
            Tile(
                src=src,
                why=why or "image not available",
                who=shown(rows[id_column].iloc[i]) if id_column else None,
                label=None if report.label is None else shown(label),
                answer=None if no_answer else shown(answer) or "(no tiles)",
                code=shown(code),
                legend=LEGENDS[drawing.kind] if drawing is not None and src else "",
            )
        )
    more = total - chosen.size
    return Gallery(tiles, f"{more:,}" if more > 0 else "")


def _id_column(frame: pd.DataFrame) -> str | None:
    from capbatch._io.inputs import ID_COLUMN_NAMES

    return next((c for c in ID_COLUMN_NAMES if c in frame.columns), None)
