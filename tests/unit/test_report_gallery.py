"""Answers drawn on their images (the report's gallery), checked pixel by pixel on blank
images where every expected position is worked out by hand."""

from __future__ import annotations

from PIL import Image

from capbatch._reports.gallery import Drawing, draw

RIGHT, WRONG, MISSED = (26, 152, 80), (215, 48, 39), (69, 117, 180)
BLANK = (255, 255, 255)


def drawn(
    kind: str, answer: object, label: object, size: tuple[int, int] = (160, 160)
) -> Image.Image:
    image = Image.new("RGBA", size, (*BLANK, 255))
    draw(image, Drawing(kind, answer, label))
    return image.convert("RGB")


def test_tiles_on_a_3x3_grid() -> None:
    # 160 px / 3: tiles about 53 px; outlines 2 px wide, 2 px inside each tile.
    image = drawn("objects", frozenset({0, 4}), frozenset({4, 8}))
    assert image.getpixel((2, 26)) == WRONG  # tile 0: chosen, not in the label
    assert image.getpixel((55, 80)) == RIGHT  # tile 4: chosen and right
    assert image.getpixel((109, 133)) == MISSED  # tile 8: missed
    assert image.getpixel((109, 26)) == BLANK  # tile 2: neither


def test_an_index_of_9_or_more_means_a_4x4_grid() -> None:
    image = drawn("objects", frozenset({15}), frozenset({15}))
    assert image.getpixel((122, 140)) == RIGHT  # tile 15: the bottom right 40 px tile


def test_box_point_slider_and_angle() -> None:
    box = drawn("box", (10.0, 10.0, 50.0, 40.0), (100.0, 100.0, 150.0, 150.0))
    assert box.getpixel((10, 25)) == WRONG and box.getpixel((30, 40)) == WRONG
    assert box.getpixel((100, 120)) == RIGHT and box.getpixel((30, 25)) == BLANK
    slider = drawn("distance", 30.0, 90.0, size=(200, 60))
    assert slider.getpixel((30, 5)) == WRONG and slider.getpixel((90, 55)) == RIGHT
    point = drawn("point", (40.0, 40.0), (120.0, 120.0))
    assert point.getpixel((40 + 6, 40)) == WRONG  # a circle of radius 3 x 2 px
    assert point.getpixel((120, 120 - 6)) == RIGHT
    # 90 degrees: from the centre to the right; 0: straight up.
    angle = drawn("angle", 90.0, 0.0)
    assert angle.getpixel((140, 80)) == WRONG and angle.getpixel((80, 20)) == RIGHT
    assert angle.getpixel((20, 80)) == BLANK


def test_a_missing_answer_draws_only_the_label() -> None:
    image = drawn("distance", None, 50.0, size=(100, 40))
    assert image.getpixel((50, 20)) == RIGHT
    assert WRONG not in {image.getpixel((x, 20)) for x in range(100)}
