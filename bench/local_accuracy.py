"""Accuracy of the local solver (ddddocr) on each committed sample set.

What: every row of ``sample_data/`` is sent through ``capbatch.local.LocalService`` as
the task a provider would get (``ImageToTextTask`` with ``body`` and a ``charset``;
``VisionEngine`` ``slider_1`` with ``image`` and ``imageBackground``; the grids'
``ReCaptchaV2Classification``), and its answer is compared with the label:

  text (captchas.parquet, 240 rows)   exact and case-insensitive match, per style, for
                                      ``charset`` all (ddddocr's own 8,210 characters),
                                      letters+digits (the default) and lowercase+digits
                                      (the sample's alphabet family)
  slider (slider.parquet, 120 rows)   exact distance, within ``--tolerance`` px (5),
                                      median and 90th percentile absolute error
  grids (grids.parquet, 120 rows)     what the local solver says (it cannot answer them)

Run from the repository root:  python bench/local_accuracy.py [--tolerance 5]
Deterministic: ddddocr's model and matcher have no randomness, so the figures only
change with ddddocr, onnxruntime, OpenCV or the sample data.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capbatch._exceptions import CapbatchError  # noqa: E402
from capbatch.local import LocalService, LocalSolver  # noqa: E402

DATA = ROOT / "sample_data"
TEXT_CHARSETS = ("all", "letters+digits", "lowercase+digits")


def _b64(relative: str) -> str:
    return base64.b64encode((DATA / relative).read_bytes()).decode("ascii")


async def _answers(service: LocalService, tasks: list[dict[str, Any]]) -> list[Any]:
    replies = await asyncio.gather(*(service.create_task(t) for t in tasks))
    return [reply.solution for reply in replies]


async def text_accuracy(service: LocalService) -> list[dict[str, Any]]:
    table = pd.read_parquet(DATA / "captchas.parquet")
    bodies = [_b64(p) for p in table["image_path"]]
    rows = []
    for charset in TEXT_CHARSETS:
        tasks = [{"type": "ImageToTextTask", "body": b, "charset": charset} for b in bodies]
        answers = pd.Series([s["text"] for s in await _answers(service, tasks)])
        exact = answers == table["label"]
        folded = answers.str.lower() == table["label"].str.lower()
        row = {"charset": charset, "exact": exact.mean(), "case-insensitive": folded.mean()}
        for style, group in table.groupby("style", sort=False):
            row[f"exact {style}"] = exact[group.index].mean()
        rows.append(row)
    return rows


async def slider_accuracy(service: LocalService, tolerance: int) -> dict[str, Any]:
    table = pd.read_parquet(DATA / "slider.parquet")
    tasks = [
        {
            "type": "VisionEngine",
            "module": "slider_1",
            "image": _b64(piece),
            "imageBackground": _b64(background),
        }
        for piece, background in zip(table["image_path"], table["background_path"], strict=True)
    ]
    distances = [s["distance"] for s in await _answers(service, tasks)]
    errors = [abs(d - int(label)) for d, label in zip(distances, table["label"], strict=True)]
    return {
        "rows": len(errors),
        "exact": sum(e == 0 for e in errors) / len(errors),
        f"within {tolerance} px": sum(e <= tolerance for e in errors) / len(errors),
        "median error px": statistics.median(errors),
        "p90 error px": statistics.quantiles(errors, n=10)[-1],
    }


async def grid_answer(service: LocalService) -> str:
    row = pd.read_parquet(DATA / "grids.parquet").iloc[0]
    task = {
        "type": "ReCaptchaV2Classification",
        "image": _b64(row["image_path"]),
        "question": row["question"],
    }
    try:
        await service.create_task(task)
    except CapbatchError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "answered (unexpected)"


async def main(tolerance: int) -> None:
    service = LocalService(LocalSolver())
    try:
        text = await text_accuracy(service)
        slider = await slider_accuracy(service, tolerance)
        grids = await grid_answer(service)
    finally:
        await service.aclose()
    print("text, sample_data/captchas.parquet (240 rows):")
    print(pd.DataFrame(text).to_string(index=False, float_format=lambda v: f"{v:.1%}"))
    print("\nslider, sample_data/slider.parquet:")
    for name, value in slider.items():
        shown = f"{value:.1%}" if name == "exact" or name.startswith("within") else value
        print(f"  {name}: {shown}")
    print(f"\ngrids, sample_data/grids.parquet: {grids}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tolerance", type=int, default=5, help="px (default: %(default)s)")
    asyncio.run(main(parser.parse_args().tolerance))
