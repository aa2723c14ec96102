"""The emulator's answer sources: ``constant``, ``oracle`` (a labels file) and ``local``.

A solver returns the true answer for an image, or ``None`` when it cannot solve it
(the emulator then replies ``ERROR_CAPTCHA_UNSOLVABLE``). Random corruption of answers
(``error_rate``) is applied by the state, not here, so every random draw comes from the
one seeded RNG in the order requests arrive.

``constant`` and ``oracle`` answer at once (``immediate``), on the event loop; ``local``
runs ddddocr on a thread pool and is only imported when first used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from capbatch._exceptions import CapbatchError, ConfigError
from capbatch.emulator._config import EmulatorConfig

if TYPE_CHECKING:
    from capbatch.local import LocalSolver

#: Characters a corrupted answer draws its wrong character from.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

#: Largest labels file read, in bytes. A row is about 80 bytes, so this is some 800,000
#: images, far beyond any test set; the bound stops a wrong path (a disk image, a log)
#: from filling memory.
MAX_LABELS_BYTES = 64 * 1024 * 1024


def oracle_key(images: Sequence[bytes], question: str | None) -> str:
    """The key of a task in the oracle's labels file (its ``sha256`` column).

    One image and no question: the image's SHA-256 (a text captcha's labels are keyed
    as they always were). Otherwise the SHA-256 of every image's SHA-256 joined by
    ``,``, then ``|`` and the question (empty when there is none); images in the order
    body, image, images[0..n], imageBackground."""
    if len(images) == 1 and not question:
        return hashlib.sha256(images[0]).hexdigest()
    joined = ",".join(hashlib.sha256(image).hexdigest() for image in images)
    return hashlib.sha256(f"{joined}|{question or ''}".encode()).hexdigest()


class Solver:
    """Base class. ``immediate`` solvers implement ``answer``; others ``solve``."""

    immediate: bool = True

    def answer(self, image: bytes, digest: str) -> str | None:
        raise NotImplementedError

    async def solve(self, image: bytes, digest: str) -> str | None:
        return self.answer(image, digest)

    def close(self) -> None:
        """Release threads or files; the default holds none."""


class ConstantSolver(Solver):
    """Always the same answer: for throughput tests, where solving must cost nothing."""

    def __init__(self, answer: str) -> None:
        self._answer = answer

    def answer(self, image: bytes, digest: str) -> str | None:
        return self._answer


class OracleSolver(Solver):
    """Answers from a ``sha256,label`` CSV keyed by ``oracle_key`` (for one image and
    no question: the image bytes' sha256); a task not in the file is unsolvable."""

    def __init__(self, labels_path: str | Path) -> None:
        self.labels = load_labels(labels_path)

    def answer(self, image: bytes, digest: str) -> str | None:
        return self.labels.get(digest)


class LocalEmulatorSolver(Solver):
    """``capbatch.local.LocalSolver`` (ddddocr), created on first use because importing
    ddddocr and loading its model takes about a second."""

    immediate = False

    def __init__(self) -> None:
        self._solver: LocalSolver | None = None

    @property
    def solver(self) -> LocalSolver:
        if self._solver is None:
            from capbatch.local import LocalSolver

            self._solver = LocalSolver()
        return self._solver

    async def solve(self, image: bytes, digest: str) -> str | None:
        try:
            return await self.solver.solve_async(image)
        except ConfigError:
            raise  # ddddocr missing: a setup problem, not an unsolvable captcha
        except CapbatchError:
            # ddddocr could not read an image that Pillow accepted: the service's
            # equivalent is "could not solve".
            return None

    def close(self) -> None:
        if self._solver is not None:
            self._solver.close()
            self._solver = None


class LabelsFileError(ConfigError):
    """A labels file that cannot be used. The message names the path and the reason,
    for the operator at the command line; ``/_control`` answers ``PUBLIC_MESSAGE``
    instead, the same for every path, so a client cannot probe which files exist."""

    PUBLIC_MESSAGE = (
        "labels: cannot use this file (it must be a readable regular file of at most "
        f"{MAX_LABELS_BYTES // (1024 * 1024)} MB, UTF-8 CSV with columns sha256,label)"
    )


def load_labels(path: str | Path) -> dict[str, str]:
    """``{sha256 hex (lower case): label}`` from a CSV with a ``sha256,label`` header;
    raises ``LabelsFileError``."""
    data = _read_regular_file(path, MAX_LABELS_BYTES)
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        if not {"sha256", "label"} <= set(reader.fieldnames or ()):
            raise LabelsFileError(f"labels file {str(path)!r} needs columns sha256,label")
        return {
            row["sha256"].strip().lower(): row["label"]
            for row in reader
            if row.get("sha256") and row.get("label") is not None
        }
    except UnicodeDecodeError:
        raise LabelsFileError(f"labels file {str(path)!r} is not UTF-8 text") from None
    except csv.Error as exc:
        raise LabelsFileError(f"labels file {str(path)!r} is not a valid CSV: {exc}") from None


def _read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes.

    It is checked with ``stat`` before opening, so a FIFO (whose open blocks until a
    writer comes) or a device (``/dev/zero`` never ends; opening some has side effects)
    is refused without being opened. ``O_NONBLOCK`` and a second check on the opened
    descriptor cover a path swapped in between; the read is bounded either way."""
    name = str(path)
    try:
        _check_regular(os.stat(path), name, limit)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        with open(os.open(path, flags | getattr(os, "O_BINARY", 0)), "rb") as fh:
            _check_regular(os.fstat(fh.fileno()), name, limit)
            data = fh.read(limit + 1)
    except OSError as exc:
        raise LabelsFileError(f"cannot read labels file {name!r}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL character in the path
        raise LabelsFileError(f"cannot read labels file {name!r}: bad path") from None
    if len(data) > limit:  # grew since the check, or a size-0 /proc-like file
        raise LabelsFileError(_too_large(name, limit))
    return data


def _check_regular(info: os.stat_result, name: str, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise LabelsFileError(f"labels file {name!r} is not a regular file")
    if info.st_size > limit:
        raise LabelsFileError(_too_large(name, limit))


def _too_large(name: str, limit: int) -> str:
    return f"labels file {name!r} is larger than {limit // (1024 * 1024)} MB"


def make_solver(config: EmulatorConfig) -> Solver:
    """The solver named by ``config.solver`` (the oracle reads its labels now, so a bad
    path fails at start-up rather than on the first request)."""
    if config.solver == "constant":
        return ConstantSolver(config.answer)
    if config.solver == "oracle":
        assert config.labels is not None  # validated by EmulatorConfig
        return OracleSolver(config.labels)
    return LocalEmulatorSolver()


def solver_key(config: EmulatorConfig) -> tuple[str, str]:
    """What identifies a solver, so ``/_control`` rebuilds it only when it changes."""
    if config.solver == "constant":
        return ("constant", config.answer)
    if config.solver == "oracle":
        return ("oracle", str(config.labels))
    return ("local", "")


def corrupt(answer: str, position_roll: float, char_roll: float) -> str:
    """``answer`` with one character replaced by a different one (both chosen by the
    given rolls in [0, 1)); an empty answer becomes one wrong character."""
    if not answer:
        return ALPHABET[int(char_roll * len(ALPHABET))]
    pos = int(position_roll * len(answer))
    original = answer[pos]
    choices = ALPHABET.replace(original.lower(), "")
    return answer[:pos] + choices[int(char_roll * len(choices))] + answer[pos + 1 :]
