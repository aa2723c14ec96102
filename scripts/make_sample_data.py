"""Generate the committed, seeded sample captcha data set in ``sample_data/``.

Makes 240 labelled captcha PNGs in three styles of increasing difficulty (80 each):

* ``plain``   (easy)   - Pillow only: dark text on a flat light background, one thin line;
* ``noisy``   (medium) - Pillow only: rotated, coloured characters plus noise lines and dots;
* ``classic`` (hard)   - the ``captcha`` package's ``ImageCaptcha(width=160, height=60)``.

and the tables that describe them::

    sample_data/images/cap-0001.png ... cap-0240.png
    sample_data/captchas.parquet       id, image_path, label, style
    sample_data/captchas.csv           same columns as captchas.parquet
    sample_data/captchas_b64.parquet   id, image_b64, label, style
    sample_data/labels.csv             sha256, label  (oracle answers keyed by PNG hash)

Run it from anywhere (the default output folder is resolved from this file's location)::

    python scripts/make_sample_data.py                  # seed 20261129 -> <repo>/sample_data
    python scripts/make_sample_data.py --seed 7 --out /tmp/sample

The output is byte-for-byte deterministic for a given seed (and given Pillow / FreeType /
pyarrow / captcha versions). Every image gets its own RNG derived from ``(seed, index)``, so
generating only the first N images reproduces exactly the first N images of a full run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import io
import random
import shutil
import string
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

DEFAULT_SEED = 20261129
DEFAULT_COUNT = 240
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "sample_data"

WIDTH, HEIGHT = 160, 60
PALETTE_COLOURS = 32
STYLES: tuple[str, ...] = ("plain", "noisy", "classic")
# Digits + lowercase letters without the easily confused 0/o, 1/l/i.
ALPHABET = "".join(c for c in string.digits + string.ascii_lowercase if c not in "0o1li")

_T = TypeVar("_T")
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Sample:
    """One generated captcha."""

    id: str
    label: str
    style: str
    png: bytes

    @property
    def image_path(self) -> str:
        return f"images/{self.id}.png"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()


# --------------------------------------------------------------------------- helpers


def _rng_for(seed: int, index: int) -> random.Random:
    """Independent RNG per image, so a prefix of the data set is reproducible on its own."""
    return random.Random(seed * 1_000_003 + index)


def _label(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))


def _png_bytes(image: Image.Image) -> bytes:
    """Encode as a small palette PNG, deterministically and without metadata.

    Quantising to a 32-colour palette (median cut, no dithering - both deterministic) makes
    the files ~3x smaller with no visible change; Pillow writes no timestamps or text chunks.
    """
    buf = io.BytesIO()
    image.quantize(PALETTE_COLOURS, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled TrueType font (Aileron), independent of system fonts."""
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
        raise RuntimeError("Pillow >= 10.1 with FreeType support is required")
    return font


# --------------------------------------------------------------------------- styles


def render_plain(label: str, rng: random.Random) -> Image.Image:
    """Easy: large dark glyphs on a flat light background, small jitter, one faint line."""
    bg = (rng.randint(235, 250),) * 3
    image = Image.new("RGB", (WIDTH, HEIGHT), bg)
    draw = ImageDraw.Draw(image)
    font = _font(38)
    ink: RGB = (rng.randint(10, 50), rng.randint(10, 50), rng.randint(10, 60))
    advances = [font.getlength(c) for c in label]
    gap = 4.0
    total = sum(advances) + gap * (len(label) - 1)
    x = (WIDTH - total) / 2
    for ch, adv in zip(label, advances, strict=True):
        y = HEIGHT / 2 + rng.randint(-3, 3)
        draw.text((x + rng.randint(-1, 1), y), ch, font=font, fill=ink, anchor="lm")
        x += adv + gap
    if rng.random() < 0.7:
        line = (rng.randint(150, 190),) * 3
        y0, y1 = rng.randint(10, HEIGHT - 10), rng.randint(10, HEIGHT - 10)
        draw.line([(rng.randint(0, 20), y0), (rng.randint(140, WIDTH), y1)], fill=line, width=1)
    return image


def _random_colour(rng: random.Random, lo: int, hi: int) -> RGB:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def render_noisy(label: str, rng: random.Random) -> Image.Image:
    """Medium: per-character rotation and colour, several noise lines and a dot field."""
    image = Image.new("RGB", (WIDTH, HEIGHT), _random_colour(rng, 200, 245))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(120, 200)):  # dots under the text
        x, y = rng.randrange(WIDTH), rng.randrange(HEIGHT)
        draw.point((x, y), fill=_random_colour(rng, 60, 200))
    slot = (WIDTH - 16) / len(label)
    for i, ch in enumerate(label):
        font = _font(rng.randint(28, 36))
        tile = Image.new("RGBA", (56, 56), (0, 0, 0, 0))
        ImageDraw.Draw(tile).text(
            (28, 28), ch, font=font, fill=(*_random_colour(rng, 0, 140), 255), anchor="mm"
        )
        tile = tile.rotate(rng.uniform(-40, 40), resample=Image.Resampling.BICUBIC)
        cx = 8 + slot * (i + 0.5) + rng.uniform(-3, 3)
        cy = HEIGHT / 2 + rng.uniform(-5, 5)
        image.paste(tile, (round(cx - 28), round(cy - 28)), tile)
    for _ in range(rng.randint(4, 6)):  # lines across the text
        pts = [(rng.randrange(WIDTH // 3), rng.randrange(HEIGHT))]
        pts.append((rng.randrange(2 * WIDTH // 3, WIDTH), rng.randrange(HEIGHT)))
        draw.line(pts, fill=_random_colour(rng, 40, 160), width=rng.randint(1, 3))
    for _ in range(rng.randint(40, 80)):  # dots over the text
        x, y = rng.randrange(WIDTH), rng.randrange(HEIGHT)
        draw.ellipse((x, y, x + 1, y + 1), fill=_random_colour(rng, 40, 180))
    return image


class _SeededSecrets:
    """Stand-in for the ``secrets`` module backed by a seeded ``random.Random``.

    ``captcha`` >= 0.6 draws all of its randomness from ``secrets`` (i.e. ``os.urandom``)
    rather than the global ``random`` module, so seeding ``random`` has no effect on it.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, exclusive_upper_bound: int) -> int:
        return self._rng.randrange(exclusive_upper_bound)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq: Sequence[_T]) -> _T:
        return self._rng.choice(seq)


@contextlib.contextmanager
def _seeded_captcha(rng: random.Random) -> Iterator[None]:
    """Make ``captcha.image`` deterministic for the duration of the block.

    Patches the module's ``secrets`` reference (captcha >= 0.6) and also seeds the global
    ``random`` (older captcha releases used it), restoring both afterwards.
    """
    import captcha.image as captcha_image

    saved_state = random.getstate()
    random.seed(rng.getrandbits(64))
    had_secrets = hasattr(captcha_image, "secrets")
    saved_secrets = getattr(captcha_image, "secrets", None)
    setattr(captcha_image, "secrets", _SeededSecrets(rng))  # noqa: B010 - keeps mypy quiet
    try:
        yield
    finally:
        if had_secrets:
            setattr(captcha_image, "secrets", saved_secrets)  # noqa: B010
        else:
            delattr(captcha_image, "secrets")
        random.setstate(saved_state)


def render_classic(label: str, rng: random.Random) -> Image.Image:
    """Hard: ``captcha.image.ImageCaptcha`` with its bundled DroidSansMono font."""
    from captcha.image import ImageCaptcha

    with _seeded_captcha(rng):
        return ImageCaptcha(width=WIDTH, height=HEIGHT).generate_image(label)


# --------------------------------------------------------------------------- generation


def make_sample(seed: int, index: int) -> Sample:
    """Build image number ``index`` (0-based); style cycles plain/noisy/classic."""
    rng = _rng_for(seed, index)
    style = STYLES[index % len(STYLES)]
    if style == "plain":
        label = _label(rng, 4, 5)
        image = render_plain(label, rng)
    elif style == "noisy":
        label = _label(rng, 4, 6)
        image = render_noisy(label, rng)
    else:
        label = _label(rng, 4, 6)
        image = render_classic(label, rng)
    return Sample(id=f"cap-{index + 1:04d}", label=label, style=style, png=_png_bytes(image))


def _write_parquet(path: Path, columns: dict[str, list[str]]) -> None:
    schema = pa.schema([(name, pa.string()) for name in columns])
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, compression="zstd")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate(
    out_dir: Path | str = DEFAULT_OUT, seed: int = DEFAULT_SEED, count: int = DEFAULT_COUNT
) -> list[Sample]:
    """Write ``count`` captchas and their tables into ``out_dir``; return the samples.

    ``out_dir/images`` is recreated from scratch; other files in ``out_dir`` (e.g. the README)
    are left alone except the four tables, which are overwritten.
    """
    out = Path(out_dir)
    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)

    samples = [make_sample(seed, i) for i in range(count)]
    for s in samples:
        (out / s.image_path).write_bytes(s.png)

    ids = [s.id for s in samples]
    labels = [s.label for s in samples]
    styles = [s.style for s in samples]
    paths = [s.image_path for s in samples]
    _write_parquet(
        out / "captchas.parquet",
        {"id": ids, "image_path": paths, "label": labels, "style": styles},
    )
    _write_csv(
        out / "captchas.csv",
        ("id", "image_path", "label", "style"),
        list(zip(ids, paths, labels, styles, strict=True)),
    )
    _write_parquet(
        out / "captchas_b64.parquet",
        {
            "id": ids,
            "image_b64": [base64.b64encode(s.png).decode("ascii") for s in samples],
            "label": labels,
            "style": styles,
        },
    )
    _write_csv(out / "labels.csv", ("sha256", "label"), [(s.sha256, s.label) for s in samples])
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default: %(default)s")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="default: %(default)s")
    args = parser.parse_args(argv)
    samples = generate(args.out, args.seed, args.count)
    size = sum(len(s.png) for s in samples)
    print(f"wrote {len(samples)} captchas ({size / 1024:.0f} KiB of PNG) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
