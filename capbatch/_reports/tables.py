"""The tables beside the summary: character confusions in wrong text answers, and the
agreement between runs (``compare``). Pure functions on plain values and DataFrames."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from capbatch._reports.metrics import flag, text


def confusions(answers: Sequence[str], labels: Sequence[str], top: int = 20) -> pd.DataFrame:
    """The ``top`` most frequent substitutions, label character -> answer character.

    Pairs of equal length are compared position by position (a captcha answer of the
    right length is read glyph by glyph); other pairs contribute the ``replace``
    operations of a Levenshtein alignment. Columns: ``label_char``, ``answer_char``,
    ``count``; most frequent first, then by characters.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for answer, truth in zip(answers, labels, strict=True):
        if len(answer) == len(truth):
            counts.update((t, a) for t, a in zip(truth, answer, strict=True) if t != a)
        else:
            for op in Levenshtein.editops(truth, answer):
                if op.tag == "replace":
                    counts[(truth[op.src_pos], answer[op.dest_pos])] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: max(top, 0)]
    table: pd.DataFrame = pd.DataFrame(
        {
            "label_char": pd.Series([t for (t, _), _ in ranked], dtype=object),
            "answer_char": pd.Series([a for (_, a), _ in ranked], dtype=object),
            "count": pd.Series([n for _, n in ranked], dtype="int64"),
        }
    )
    return table


def agreement(answers: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Which matched rows all runs answered alike, and the agreement of each pair of runs.

    ``answers`` has one column of normalised answers per run, one row per matched row.
    Two answers agree when both are present, non-empty and equal: a failed row agrees
    with nothing. Returns a boolean Series (all runs agree) and a DataFrame with columns
    ``run_a``, ``run_b``, ``rows``, ``agree``, ``agreement`` for every pair.
    """
    names = list(answers.columns)
    given = {name: text(answers[name]) for name in names}
    given = {name: values.where(flag(values != "")) for name, values in given.items()}
    every = np.ones(len(answers), dtype=bool)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            agree = flag(given[a] == given[b])
            if i == 0:
                every &= agree
            share = agree.mean() if len(agree) else np.nan
            pairs.append((a, b, len(agree), int(agree.sum()), share))
    table = pd.DataFrame(pairs, columns=["run_a", "run_b", "rows", "agree", "agreement"])
    return pd.Series(every, index=answers.index), table
