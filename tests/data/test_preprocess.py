import numpy as np
import pytest

from tuner.data import _phantom, preprocess
from tuner.data.preprocess import (
    Box,
    breast_mask,
    cut,
    enhance,
    roi_boxes,
    tile_side,
    tissue_boxes,
    to_uint8,
    whole_image,
    whole_shape,
)


@pytest.fixture(scope="module")
def mammogram():
    """A phantom MLO view (the breast touches the top-left corner through the pectoral
    muscle) with a burnt-in label in the background."""
    rng = np.random.default_rng(0)
    image, breast, allowed = _phantom.render_breast(rng, 500, 300, view="MLO", density=2, scale=0.1)
    image[20:40, 220:280] = 0.95  # a label, away from the breast
    breast_truth = breast.copy()
    lesion = _phantom.render_mass(rng, malignant=True, radius=15, difficulty=0.2)
    lesion_mask = _phantom.paste(image, lesion, (300, 80))
    return to_uint8(image), breast_truth, lesion_mask


def test_breast_mask_keeps_the_breast_and_drops_label_and_background(mammogram):
    pixels, truth, _ = mammogram
    found = breast_mask(pixels)
    assert not found[20:40, 220:280].any()  # the label
    assert found[0, 0]  # the breast reaches the corner; it is not taken for background
    overlap = (found & truth).sum() / (found | truth).sum()
    assert overlap > 0.95


def test_blank_image_has_no_breast():
    assert not breast_mask(np.zeros((100, 80), np.uint8)).any()


def test_tile_side_follows_the_published_rule():
    assert tile_side(100, 598) == 598  # small ROI: the context tile, never blown up
    assert tile_side(550, 598) == 660  # close to the tile: padded 20%
    assert tile_side(1000, 598) == 1050  # larger ROI: its box plus 5%


def test_roi_boxes_keep_the_roi_inside(mammogram):
    _, _, lesion = mammogram
    ys, xs = np.nonzero(lesion)
    rng = np.random.default_rng(1)
    for box in roi_boxes(lesion, context_px=120, variants=10, rng=rng):
        assert box.y0 <= ys.min() and box.y0 + box.side >= ys.max() + 1
        assert box.x0 <= xs.min() and box.x0 + box.side >= xs.max() + 1
    (centred,) = roi_boxes(lesion, context_px=120, variants=0, rng=rng)
    assert not centred.flip and centred.turns == 0


def test_tissue_boxes_stay_in_the_breast_away_from_lesions(mammogram):
    pixels, _, lesion = mammogram
    breast = breast_mask(pixels)
    boxes = tissue_boxes(
        pixels, breast, [preprocess.roi_box(lesion)], side=48, count=5, rng=np.random.default_rng(2)
    )
    assert boxes
    for box in boxes:
        window = (slice(box.y0, box.y0 + 48), slice(box.x0, box.x0 + 48))
        assert breast[window].mean() >= 0.98
        # at least half a tile from every lesion pixel
        assert not lesion[
            max(0, box.y0 - 24) : box.y0 + 72, max(0, box.x0 - 24) : box.x0 + 72
        ].any()
        patch = pixels[window]
        assert preprocess.TISSUE_MEAN[0] <= patch.mean() <= preprocess.TISSUE_MEAN[1]


def test_cut_pads_outside_the_image_and_turns():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    tile = cut(image, Box(-2, -2, 4), (4,))[4]
    assert (tile[:2] == 0).all() and tile[2, 2] == image[0, 0]
    turned = cut(image, Box(0, 0, 4, flip=False, turns=1), (4,))[4]
    assert np.array_equal(turned, np.rot90(image))


def test_whole_image_is_oriented_and_has_the_published_aspect(mammogram):
    pixels, _, _ = mammogram
    breast = breast_mask(pixels)
    for flipped in (False, True):
        picture = pixels[:, ::-1] if flipped else pixels
        region = breast[:, ::-1] if flipped else breast
        out = whole_image(picture, region, (96, 192))
        assert out[96].shape == whole_shape(96) == (96, 64)
        assert out[192].shape == (192, 128)
        # chest wall (the breast's widest side) on the left
        assert out[96][:, :10].mean() > out[96][:, -10:].mean()


@pytest.mark.parametrize("mode", preprocess.ENHANCEMENTS)
def test_enhancements(mammogram, mode):
    pixels, _, _ = mammogram
    out = enhance(pixels, mode)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    if mode == "none":
        assert out is pixels
    else:
        assert not np.array_equal(out, pixels)
    with pytest.raises(ValueError, match="unknown enhancement"):
        enhance(pixels, "sharpen")
