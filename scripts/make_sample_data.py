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
    sample_data/grids/grid-0001.png ... grid-0120.png   3x3 grids of synthetic classes
    sample_data/grids.parquet          id, image_path, question, label ("1,4,7": 0-based tiles)
    sample_data/slider/slider-0001-piece.png, slider-0001-bg.png ...
    sample_data/slider.parquet         id, image_path (piece), background_path, label (gap x)
    sample_data/labels.csv             sha256, label  (oracle answers keyed by ``oracle_key``)

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
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DEFAULT_SEED = 20261129
DEFAULT_COUNT = 240
DEFAULT_GRIDS = 120
DEFAULT_SLIDERS = 120
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


# --------------------------------------------------------------------------- task keys


def oracle_key(images: Sequence[bytes], question: str | None = None) -> str:
    """The key of a task's answer in ``labels.csv`` (the emulator's oracle uses the same).

    One image and no question: the image's sha256, as for the text captchas. Otherwise
    the sha256 of the images' sha256 hex digests joined by ``,`` (in field order ``body``,
    ``image``, ``images[...]``, ``imageBackground``), then ``|`` and the question.
    """
    if len(images) == 1 and not question:
        return hashlib.sha256(images[0]).hexdigest()
    digests = ",".join(hashlib.sha256(image).hexdigest() for image in images)
    return hashlib.sha256(f"{digests}|{question or ''}".encode()).hexdigest()


# --------------------------------------------------------------------------- 3x3 grids

GRID_TILE = 100  # 3x3 tiles of 100 px: a 300x300 grid, a size reCAPTCHA uses for 3x3
GRID_COLOURS = 24
#: Each synthetic class as a real ReCaptchaV2Classification question code (CapSolver's list).
GRID_CLASSES: dict[str, str] = {
    "car": "/m/0k4j",
    "bus": "/m/01bjv",
    "palm_tree": "/m/0cdl1",
    "traffic_light": "/m/015qff",
    "mountain": "/m/09d_r",
}


@dataclass(frozen=True)
class GridSample:
    """One 3x3 grid: ``label`` = the sorted 0-based row-major indexes of the asked class."""

    id: str
    question: str
    label: str
    png: bytes

    @property
    def image_path(self) -> str:
        return f"grids/{self.id}.png"

    @property
    def key(self) -> str:
        return oracle_key([self.png], self.question)


def _draw_car(draw: ImageDraw.ImageDraw, rng: random.Random, body: RGB) -> None:
    x, y = rng.randint(8, 22), rng.randint(38, 52)
    draw.rectangle((x, y, x + 70, y + 22), fill=body)
    draw.polygon([(x + 14, y), (x + 22, y - 16), (x + 50, y - 16), (x + 58, y)], fill=body)
    draw.rectangle((x + 25, y - 12, x + 47, y - 2), fill=(200, 225, 245))
    for wx in (x + 14, x + 56):
        draw.ellipse((wx - 8, y + 16, wx + 8, y + 32), fill=(25, 25, 25))


def _draw_bus(draw: ImageDraw.ImageDraw, rng: random.Random, body: RGB) -> None:
    x, y = rng.randint(4, 10), rng.randint(22, 36)
    draw.rectangle((x, y, x + 86, y + 40), fill=body)
    for i in range(5):
        wx = x + 5 + i * 16
        draw.rectangle((wx, y + 6, wx + 11, y + 18), fill=(200, 225, 245))
    for wx in (x + 16, x + 70):
        draw.ellipse((wx - 8, y + 34, wx + 8, y + 50), fill=(25, 25, 25))


def _draw_palm_tree(draw: ImageDraw.ImageDraw, rng: random.Random, body: RGB) -> None:
    cx, top = rng.randint(40, 60), rng.randint(22, 34)
    draw.line([(cx, 96), (cx + rng.randint(-6, 6), top)], fill=(120, 80, 40), width=7)
    leaf = (rng.randint(20, 60), rng.randint(120, 170), rng.randint(20, 60))
    for dx, dy in ((-30, 10), (30, 10), (-22, -12), (22, -12), (0, -20)):
        draw.line([(cx, top), (cx + dx, top + dy)], fill=leaf, width=6)


def _draw_traffic_light(draw: ImageDraw.ImageDraw, rng: random.Random, body: RGB) -> None:
    x, y = rng.randint(34, 50), rng.randint(6, 14)
    draw.line([(x + 8, y + 60), (x + 8, 98)], fill=(90, 90, 90), width=4)
    draw.rectangle((x, y, x + 18, y + 60), fill=(30, 30, 30))
    for i, lamp in enumerate(((220, 40, 40), (230, 190, 40), (40, 190, 70))):
        draw.ellipse((x + 3, y + 4 + i * 19, x + 15, y + 16 + i * 19), fill=lamp)


def _draw_mountain(draw: ImageDraw.ImageDraw, rng: random.Random, body: RGB) -> None:
    grey = rng.randint(90, 140)
    peak = (rng.randint(30, 60), rng.randint(15, 30))
    draw.polygon([(2, 92), peak, (98, 92)], fill=(grey, grey - 10, grey - 25))
    draw.polygon([(peak[0] - 12, peak[1] + 18), peak, (peak[0] + 12, peak[1] + 18)], fill="white")


_GRID_DRAWERS = {
    "car": _draw_car,
    "bus": _draw_bus,
    "palm_tree": _draw_palm_tree,
    "traffic_light": _draw_traffic_light,
    "mountain": _draw_mountain,
}


def _grid_tile(kind: str, rng: random.Random) -> Image.Image:
    """One 100x100 tile: a sky-to-ground background and one drawing of ``kind``."""
    tile = Image.new("RGB", (GRID_TILE, GRID_TILE), _random_colour(rng, 170, 235))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 80, GRID_TILE, GRID_TILE), fill=_random_colour(rng, 110, 170))
    _GRID_DRAWERS[kind](draw, rng, _random_colour(rng, 30, 220))
    return tile


def make_grid(seed: int, index: int) -> GridSample:
    """Grid number ``index``: 1-4 tiles of the asked class, the rest of other classes."""
    rng = _rng_for(seed, 100_000 + index)
    classes = list(GRID_CLASSES)
    asked = classes[index % len(classes)]
    chosen = set(rng.sample(range(9), rng.randint(1, 4)))
    others = [c for c in classes if c != asked]
    image = Image.new("RGB", (3 * GRID_TILE, 3 * GRID_TILE), "white")
    for cell in range(9):
        kind = asked if cell in chosen else rng.choice(others)
        row, col = divmod(cell, 3)
        image.paste(_grid_tile(kind, rng), (col * GRID_TILE, row * GRID_TILE))
    draw = ImageDraw.Draw(image)
    for edge in (GRID_TILE, 2 * GRID_TILE):  # the white gutters between tiles
        draw.line([(edge, 0), (edge, 3 * GRID_TILE)], fill="white", width=3)
        draw.line([(0, edge), (3 * GRID_TILE, edge)], fill="white", width=3)
    buf = io.BytesIO()
    image.quantize(GRID_COLOURS, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    return GridSample(
        id=f"grid-{index + 1:04d}",
        question=GRID_CLASSES[asked],
        label=",".join(str(i) for i in sorted(chosen)),
        png=buf.getvalue(),
    )


# --------------------------------------------------------------------------- sliders

SLIDER_WIDTH, SLIDER_HEIGHT, PIECE = 280, 160, 48


@dataclass(frozen=True)
class SliderSample:
    """One slider: ``label`` = the gap's left x in the background, in pixels."""

    id: str
    label: str
    piece: bytes
    background: bytes

    @property
    def image_path(self) -> str:
        return f"slider/{self.id}-piece.png"

    @property
    def background_path(self) -> str:
        return f"slider/{self.id}-bg.png"

    @property
    def key(self) -> str:
        return oracle_key([self.piece, self.background])


def _slider_scene(rng: random.Random) -> Image.Image:
    """A busy background: a colour field with overlapping shapes, so the gap has to be found."""
    image = Image.new("RGB", (SLIDER_WIDTH, SLIDER_HEIGHT), _random_colour(rng, 80, 200))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(14, 22)):
        x, y = rng.randrange(-30, SLIDER_WIDTH), rng.randrange(-30, SLIDER_HEIGHT)
        w, h = rng.randint(20, 90), rng.randint(20, 90)
        box = (x, y, x + w, y + h)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=_random_colour(rng, 30, 240))
        else:
            draw.rectangle(box, fill=_random_colour(rng, 30, 240))
    return image


def _piece_mask() -> Image.Image:
    """A jigsaw piece: a square with a round tab on its right side (``L`` mode, 255 inside)."""
    mask = Image.new("L", (PIECE, PIECE), 0)
    draw = ImageDraw.Draw(mask)
    draw.rectangle((0, 6, PIECE - 13, PIECE - 7), fill=255)
    draw.ellipse((PIECE - 22, PIECE // 2 - 9, PIECE - 4, PIECE // 2 + 9), fill=255)
    return mask


def _palette_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    if image.mode == "RGBA":  # keeps the transparency: fast octree is Pillow's RGBA quantiser
        quantised = image.quantize(PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    else:
        quantised = image.quantize(PALETTE_COLOURS, dither=Image.Dither.NONE)
    quantised.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def make_slider(seed: int, index: int) -> SliderSample:
    """Slider number ``index``: the piece cut from the scene, the scene with a shaded gap."""
    rng = _rng_for(seed, 200_000 + index)
    scene = _slider_scene(rng)
    x = rng.randint(PIECE + 20, SLIDER_WIDTH - PIECE - 4)
    y = rng.randint(4, SLIDER_HEIGHT - PIECE - 4)
    mask = _piece_mask()
    piece = Image.new("RGBA", (PIECE, PIECE), (0, 0, 0, 0))
    piece.paste(scene.crop((x, y, x + PIECE, y + PIECE)), (0, 0), mask)
    outline = mask.filter(ImageFilter.FIND_EDGES)
    piece.paste((255, 255, 255, 255), (0, 0), outline)
    background = scene.copy()
    shade = Image.new("RGB", (PIECE, PIECE), (0, 0, 0))
    gap = Image.blend(scene.crop((x, y, x + PIECE, y + PIECE)), shade, 0.55)
    background.paste(gap, (x, y), mask)
    background.paste((235, 235, 235), (x, y), outline)
    return SliderSample(
        id=f"slider-{index + 1:04d}",
        label=str(x),
        piece=_palette_png(piece),
        background=_palette_png(background),
    )


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


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def generate(
    out_dir: Path | str = DEFAULT_OUT,
    seed: int = DEFAULT_SEED,
    count: int = DEFAULT_COUNT,
    grid_count: int = DEFAULT_GRIDS,
    slider_count: int = DEFAULT_SLIDERS,
) -> list[Sample]:
    """Write ``count`` captchas, ``grid_count`` grids and ``slider_count`` sliders and their
    tables into ``out_dir``; return the captcha samples.

    ``out_dir/images``, ``grids`` and ``slider`` are recreated from scratch; other files in
    ``out_dir`` (e.g. the README) are left alone except the tables, which are overwritten.
    """
    out = Path(out_dir)
    for folder in ("images", "grids", "slider"):
        _fresh_dir(out / folder)

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
    grids = [make_grid(seed, i) for i in range(grid_count)]
    sliders = [make_slider(seed, i) for i in range(slider_count)]
    _write_task_sets(out, grids, sliders)
    oracle = [(s.sha256, s.label) for s in samples]
    oracle += [(g.key, g.label) for g in grids] + [(s.key, s.label) for s in sliders]
    _write_csv(out / "labels.csv", ("sha256", "label"), oracle)
    return samples


def _write_task_sets(out: Path, grids: list[GridSample], sliders: list[SliderSample]) -> None:
    """The grid and slider images and their Parquet tables."""
    for g in grids:
        (out / g.image_path).write_bytes(g.png)
    _write_parquet(
        out / "grids.parquet",
        {
            "id": [g.id for g in grids],
            "image_path": [g.image_path for g in grids],
            "question": [g.question for g in grids],
            "label": [g.label for g in grids],
        },
    )
    for s in sliders:
        (out / s.image_path).write_bytes(s.piece)
        (out / s.background_path).write_bytes(s.background)
    _write_parquet(
        out / "slider.parquet",
        {
            "id": [s.id for s in sliders],
            "image_path": [s.image_path for s in sliders],
            "background_path": [s.background_path for s in sliders],
            "label": [s.label for s in sliders],
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default: %(default)s")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="default: %(default)s")
    parser.add_argument("--grids", type=int, default=DEFAULT_GRIDS, help="default: %(default)s")
    parser.add_argument("--sliders", type=int, default=DEFAULT_SLIDERS, help="default: %(default)s")
    args = parser.parse_args(argv)
    samples = generate(args.out, args.seed, args.count, args.grids, args.sliders)
    size = sum(len(s.png) for s in samples)
    print(f"wrote {len(samples)} captchas ({size / 1024:.0f} KiB of PNG) to {args.out}")
    print(f"wrote {args.grids} 3x3 grids and {args.sliders} sliders to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
