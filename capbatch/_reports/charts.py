"""The report's charts: matplotlib PNGs as ``data:`` URIs, for the HTML report.

Drawn on an Agg canvas (``matplotlib.figure.Figure``), without touching pyplot's global
backend. Text from the data (group values, run names) is drawn as plain text, never as
TeX, and cut with ``shown``. A URI is base64 after a fixed prefix: no character in it is
one HTML escaping would change, and the templates escape it all the same.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from capbatch._reports.metrics import LABELS, shown

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLOURS = ("#3b6ea8", "#d0893a", "#4c9a6a", "#b5475b", "#7a68a6", "#6b7b8c")
#: Right, wrong and missed, in charts and drawn on images alike.
RIGHT, WRONG, MISSED = "#1a9850", "#d73027", "#4575b4"


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x" if height > width / 2 else "y", color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _png(fig: Figure) -> str:
    """The figure as a ``data:`` URI of a PNG (base64: no character HTML would change)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a glyph missing from the font is drawn as a box
        warnings.simplefilter("ignore")
        fig.savefig(buffer, format="png")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _plain(texts: Iterable[Any]) -> None:
    for t in texts:
        t.set_parse_math(False)  # a "$" in a group value is text, not TeX


def latency_chart(latencies: Mapping[str, np.ndarray]) -> str | None:
    """Histogram of latencies per run (NaN dropped), None if there are none; the far tail
    goes into the last bin."""
    values = {n: v[~np.isnan(v)] for n, v in latencies.items()}
    every = np.concatenate([v for v in values.values()] or [np.zeros(0)])
    if every.size == 0:
        return None
    p50, p95, p995 = np.percentile(every, [50, 95, 99.5])
    # A few very slow rows would squash the rest into a couple of bins: cap the axis.
    top = max(float(min(p995, max(2 * p95, 4 * p50))), float(every.min()) + 1.0)
    bins = np.linspace(float(every.min()), top, 41)
    fig, ax = _figure(7.5, 2.8)
    for (name, v), colour in zip(values.items(), _COLOURS * 9, strict=False):
        counts, _ = np.histogram(np.clip(v, None, top), bins=bins)
        ax.stairs(
            counts,
            bins,
            fill=len(values) == 1,
            color=colour,
            alpha=0.85,
            label=shown(name, 24),
            linewidth=1.5,
        )
    for p, style in ((50, "--"), (95, ":")):
        if len(values) == 1:
            x = float(np.percentile(every, p))
            ax.axvline(x, color="#333", linestyle=style, linewidth=1, label=f"p{p} {x:,.0f} ms")
    ax.set_xlabel(f"latency (ms); rows slower than {top:,.0f} ms drawn in the last bin")
    ax.set_ylabel("rows")
    _plain(ax.legend(frameon=False, fontsize=8).get_texts())
    return _png(fig)


def bar_chart(frame: pd.DataFrame, columns: Sequence[str], title: str, percent: bool) -> str:
    """Horizontal bars: one group of bars per row of ``frame``, one bar per column."""
    rows = frame.head(30)
    labels = [
        shown(k if not isinstance(k, tuple) else " · ".join(map(str, k)), 28) for k in rows.index
    ]
    fig, ax = _figure(7.5, 0.8 + 0.28 * len(rows) * max(1, len(columns)) ** 0.6)
    y = np.arange(len(rows))
    width = 0.8 / len(columns)
    for i, (column, colour) in enumerate(zip(columns, _COLOURS, strict=False)):
        values = rows[column].to_numpy(dtype=float, na_value=np.nan) * (100 if percent else 1)
        ax.barh(
            y + (i - (len(columns) - 1) / 2) * width,
            np.nan_to_num(values),
            height=width,
            color=colour,
            label=shown(LABELS.get(column, column), 40),
        )
    ax.set_yticks(y, labels=labels, parse_math=False)
    ax.invert_yaxis()
    fig.suptitle(shown(title, 60), x=0.01, ha="left", fontsize=10, parse_math=False)
    if percent:
        ax.set_xlim(0, 100)
        ax.set_xlabel("%")
    if len(columns) > 1:
        legend = fig.legend(
            frameon=False, fontsize=8, loc="outside upper right", ncols=min(len(columns), 4)
        )
        _plain(legend.get_texts())
    return _png(fig)


def error_chart(
    errors: Mapping[str, np.ndarray], limit: float, xlabel: str, *, upper: float | None = None
) -> str | None:
    """Histogram of per-row errors (or IoUs) of each run, NaN dropped, with the pass line
    at ``limit``; None if there are none. ``upper`` fixes the axis (1 for IoU), else the
    far tail goes into the last bin."""
    values = {n: v[~np.isnan(v)] for n, v in errors.items()}
    every = np.concatenate([v for v in values.values()] or [np.zeros(0)])
    if every.size == 0:
        return None
    top = upper if upper is not None else max(float(np.percentile(every, 99)), 2 * limit, 1.0)
    bins = np.linspace(0.0, top, 31)
    fig, ax = _figure(7.5, 2.6)
    for (name, v), colour in zip(values.items(), _COLOURS * 9, strict=False):
        counts, _ = np.histogram(np.clip(v, 0.0, top), bins=bins)
        one = len(values) == 1
        ax.stairs(counts, bins, fill=one, color=colour, alpha=0.85, label=None if one else
                  shown(name, 24), linewidth=1.5)  # fmt: skip
    ax.axvline(limit, color="#333", linestyle="--", linewidth=1, label=f"pass line {limit:g}")
    ax.set_xlabel(shown(xlabel, 90), parse_math=False)
    ax.set_ylabel("rows")
    _plain(ax.legend(frameon=False, fontsize=8).get_texts())
    return _png(fig)


def tile_chart(right: np.ndarray, extra: np.ndarray, missed: np.ndarray) -> str:
    """Per tile index: how often it was chosen rightly, chosen wrongly and missed."""
    fig, ax = _figure(7.5, 2.6)
    x = np.arange(len(right))
    parts = ((right, "chosen, right", RIGHT), (extra, "chosen, wrong", WRONG),
             (missed, "missed", MISSED))  # fmt: skip
    for i, (values, name, colour) in enumerate(parts):
        ax.bar(x + (i - 1) * 0.27, values, width=0.27, color=colour, label=name)
    ax.set_xticks(x, labels=[str(i) for i in x])
    ax.set_xlabel("tile index (0 = top left, row by row)")
    ax.set_ylabel("rows")
    _plain(ax.legend(frameon=False, fontsize=8).get_texts())
    return _png(fig)


def cascade_chart(
    curve: tuple[np.ndarray, np.ndarray],
    marked: Sequence[tuple[str, float, float]],
    provider: tuple[str, float, float],
    recommended: tuple[float, float] | None,
) -> str:
    """The cascade curve: accuracy (%) against cost per 1,000 rows, a line through every
    threshold (``curve``: costs, accuracies), the ``marked`` thresholds named
    (text, cost, accuracy), the provider alone as a reference point and the
    recommended threshold ringed."""
    costs, accuracies = curve
    fig, ax = _figure(7.5, 3.6)
    ax.grid(axis="x", color="#e4e4e4", linewidth=0.8)
    ax.plot(costs, 100 * accuracies, color=_COLOURS[0], linewidth=1.2, marker=".",
            markersize=3, label="cascade, one point per threshold")  # fmt: skip
    ax.scatter([c for _, c, _ in marked], [100 * a for _, _, a in marked], s=14,
               color="#333", zorder=3)  # fmt: skip
    for text, cost, accuracy in marked:
        ax.annotate(shown(text, 24), (cost, 100 * accuracy), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="#333", annotation_clip=False)  # fmt: skip
    name, cost, accuracy = provider
    ax.scatter([cost], [100 * accuracy], marker="D", s=40, color=_COLOURS[1], zorder=3,
               label=shown(f"{name} alone", 40))  # fmt: skip
    if recommended is not None:
        ax.scatter([recommended[0]], [100 * recommended[1]], s=140, facecolors="none",
                   edgecolors=RIGHT, linewidths=2, zorder=4, label="recommended")  # fmt: skip
    ax.set_xlabel("cost per 1,000 rows (USD)")
    ax.set_ylabel("accuracy (%)")
    _plain(ax.legend(frameon=False, fontsize=8, loc="lower right").get_texts())
    return _png(fig)
