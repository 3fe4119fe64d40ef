"""Bright strips along the border of digitised film (unexposed film edge, label tape) are cut
away with the background: none of their pixels reaches a model's input, and the breast stays."""

import cv2
import numpy as np
import pytest

from tuner.data import _phantom
from tuner.data.preprocess import (
    SourceImage,
    border_strips,
    breast_mask,
    model_inputs,
    to_uint8,
)

SIDES = _phantom.SIDES


def _uint16(image: np.ndarray) -> np.ndarray:
    """As the synthetic CBIS-DDSM writes its DICOMs (``_synth_cbis._to_uint16``)."""
    return (np.clip(image, 0.0, 1.0) * 60000 + 200).astype(np.uint16)


def _jpeg(image: np.ndarray) -> np.ndarray:
    """8 bits, JPEG at quality 90 and back, as in a JPEG edition of a dataset."""
    pixels = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)


FORMATS = {"uint16": _uint16, "jpeg": _jpeg}


def _hidden(strips: np.ndarray) -> np.ndarray:
    """The strip pixels and those between them and the image edge (a strip drawn 1-2 px in
    from the edge leaves a sliver of breast outside it, not worth keeping)."""
    out = strips.copy()
    h, w = strips.shape
    dy, dx = h // 20, w // 20
    out[:dy] |= np.logical_or.accumulate(strips[:dy][::-1], axis=0)[::-1]
    out[h - dy :] |= np.logical_or.accumulate(strips[h - dy :], axis=0)
    out[:, :dx] |= np.logical_or.accumulate(strips[:, :dx][:, ::-1], axis=1)[:, ::-1]
    out[:, w - dx :] |= np.logical_or.accumulate(strips[:, w - dx :], axis=1)
    return out


def _bright_line(whole: np.ndarray) -> dict[str, float]:
    """Per edge of a whole image, the share of its length where the outer 2 pixels are much
    brighter than the 4 inside them (a strip left along that edge)."""
    image = whole.astype(np.int16)
    sides = {"top": image, "bottom": image[::-1], "left": image.T, "right": image.T[::-1]}
    return {
        edge: float((lines[:2].mean(0) - lines[2:6].mean(0) > 30).mean())
        for edge, lines in sides.items()
    }


def _phantom_image(seed: int, height: int, width: int, *, view: str, flip: bool):
    rng = np.random.default_rng(seed)
    image, breast, _ = _phantom.render_breast(
        rng, height, width, view=view, density=1 + seed % 4, scale=0.1
    )
    if flip:  # a right breast: chest wall on the right edge
        image, breast = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(breast[:, ::-1])
    return rng, image, breast


def _check_removed(image, breast, strips, convert):
    """No strip pixel survives, at least 98% of the breast the strips leave is kept, and the
    whole image has no bright line along its edges."""
    source = SourceImage(convert(image))
    assert not source.pixels[strips].any()
    assert not source.breast[strips].any()
    truth = breast & ~_hidden(strips)
    assert (source.breast & truth).sum() >= 0.98 * truth.sum()
    height = image.shape[0]  # (nearly) the source resolution
    whole = model_inputs(source, view="whole", enhance="none", sizes=(height,))[height]
    assert max(_bright_line(whole).values()) <= 0.02


@pytest.mark.parametrize("convert", FORMATS.values(), ids=list(FORMATS))
@pytest.mark.parametrize("thick", [False, True], ids=["thin", "thick"])
@pytest.mark.parametrize("full", [True, False], ids=["full", "partial"])
@pytest.mark.parametrize("side", SIDES)
def test_a_strip_touching_the_breast_is_cut_away(side, full, thick, convert):
    for seed in (1, 2):
        # MLO: the pectoral muscle touches the top edge, the breast the bottom and chest
        # wall; a flipped (right) breast has its chest wall on the right.
        rng, image, breast = _phantom_image(seed, 400, 240, view="MLO", flip=side == "right")
        along, across = (240, 400) if side in ("top", "bottom") else (400, 240)
        start, length = (0, along) if full else (along // 10, int(along * 0.4))
        strips = _phantom.draw_border_strip(
            rng,
            image,
            side=side,
            thickness=round(0.02 * across) if thick else 2,
            start=start,
            length=length,
            inset=seed - 1,
            level=0.92 if seed == 1 else 0.99,
        )
        near = cv2.dilate(strips.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert (near & ~strips & breast).any()  # the strip touches the breast
        _check_removed(image, breast, strips, convert)


@pytest.mark.parametrize("convert", FORMATS.values(), ids=list(FORMATS))
def test_random_strips_are_cut_away(convert):
    for seed in range(12):
        rng, image, breast = _phantom_image(
            seed, 400, 240, view=("MLO", "CC")[seed % 2], flip=seed % 3 == 0
        )
        strips = _phantom.add_border_strips(rng, image)
        _check_removed(image, breast, strips, convert)


@pytest.mark.parametrize("convert", FORMATS.values(), ids=list(FORMATS))
def test_strips_on_every_side_of_a_larger_image(convert):
    rng, image, breast = _phantom_image(7, 1000, 600, view="MLO", flip=False)
    strips = np.zeros(image.shape, bool)
    for side, thickness, start, length in (
        ("top", 20, 0, 600),
        ("left", 3, 100, 500),
        ("bottom", 12, 150, 300),
        ("right", 8, 0, 1000),
    ):
        strips |= _phantom.draw_border_strip(
            rng, image, side=side, thickness=thickness, start=start, length=length, inset=1
        )
    _check_removed(image, breast, strips, convert)


@pytest.mark.parametrize("convert", FORMATS.values(), ids=list(FORMATS))
def test_without_strips_the_breast_is_found_as_before(convert):
    for seed in range(16):
        rng, image, breast = _phantom_image(
            seed, 400, 240, view=("MLO", "CC")[seed % 2], flip=seed % 3 == 0
        )
        _phantom.add_label_artifact(rng, image, breast)
        lesion = _phantom.render_mass(rng, malignant=True, radius=12, difficulty=0.2)
        _phantom.paste(image, lesion, (200, 60))
        decoded = convert(image)
        pixels = to_uint8(decoded)
        assert not border_strips(pixels).any()
        source = SourceImage(decoded)
        before = breast_mask(pixels)
        assert np.array_equal(source.breast, before)
        assert np.array_equal(source.pixels, np.where(before, pixels, 0))


@pytest.mark.parametrize("convert", FORMATS.values(), ids=list(FORMATS))
@pytest.mark.parametrize("top, side", [(0.35, 0.45), (0.42, 0.3), (0.3, 0.12)])
def test_a_bright_pectoral_muscle_is_not_a_strip(convert, top, side):
    """Even saturated, the muscle (touching the top and chest-wall edges) stays: its depth
    changes along the edge. A bright speck on the edge (too short) stays too."""
    rng, image, breast = _phantom_image(4, 400, 240, view="MLO", flip=False)
    yy, xx = np.mgrid[0:400, 0:240]
    muscle = (xx / (240 * top) + yy / (400 * side)) < 1.0
    image[muscle] = 0.96 + 0.01 * rng.standard_normal(int(muscle.sum()))
    image[150:155, 0:4] = 0.98  # a calcification on the chest-wall edge
    breast |= muscle
    decoded = convert(image)
    assert not border_strips(to_uint8(decoded)).any()
    source = SourceImage(decoded)
    assert source.breast[muscle].mean() >= 0.995
    assert source.breast[150:155, 0:4].all()
    assert (source.breast & breast).sum() >= 0.98 * breast.sum()


def test_add_border_strips_draws_thin_bright_strips_on_the_edges():
    sides_drawn = set()
    for seed in range(20):
        image = np.full((300, 200), 0.3, np.float32)
        strips = _phantom.add_border_strips(np.random.default_rng(seed), image)
        again = _phantom.add_border_strips(np.random.default_rng(seed), image.copy())
        assert np.array_equal(strips, again)  # deterministic per seed
        assert image.dtype == np.float32
        assert (image[strips] >= 0.9).all() and (image[strips] <= 1.0).all()
        assert (image[~strips] == 0.3).all()
        inner = np.zeros_like(strips)
        inner[6 + 2 : -6 - 2, 4 + 2 : -4 - 2] = True  # deeper than 2% of the side + 2 px
        assert not (strips & inner).any()
        edges = (strips[:3, 10:-10], strips[-3:, 10:-10], strips[10:-10, :3], strips[10:-10, -3:])
        sides_drawn.add(sum(edge.any() for edge in edges))
    assert {0, 1, 2, 3} <= sides_drawn
