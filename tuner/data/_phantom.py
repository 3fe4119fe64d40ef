"""Procedural mammogram phantoms: breast outline, tissue texture, pectoral muscle, lesions.

Everything works in "attenuation" units in [0, 1] (bright = dense, as in MONOCHROME2
mammograms) and in pixels of the output image. Sizes are given in pixels of a real
CBIS-DDSM scan (about 50 micrometres per pixel) and multiplied by ``scale``.

The lesions carry the published radiological cues, so the class is learnable from pixels:
benign masses are round or oval with smooth, well-circumscribed margins; malignant masses are
irregular with ill-defined margins and radiating spicules; benign calcifications are few,
coarse, round and scattered; malignant ones are many, fine, pleomorphic (dots, rods,
branches) and tightly clustered. ``difficulty`` in [0, 1] moves the two classes' parameters
towards each other and lowers lesion contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Lesion:
    """One rendered lesion: an additive intensity patch and its ROI mask, same shape."""

    intensity: np.ndarray  # float32, added to the image
    mask: np.ndarray  # bool, the ROI outline as a radiologist would draw it


def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth zero-mean, unit-variance noise with features about ``cell`` pixels wide."""
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    field = cv2.resize(
        rng.standard_normal((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    return (field - field.mean()) / (field.std() + 1e-6)


def render_breast(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    view: str,
    density: int,
    scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a left breast (chest wall on the left edge) on a dark background.

    Returns:
        (image, breast_mask, lesion_allowed): float32 attenuation in [0, 1], the breast
        region, and where a lesion centre may go (inside the breast, away from the skin line
        and the pectoral muscle).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = width * rng.uniform(0.72, 0.9)
    if view == "MLO":
        centre_y, half_h = height * rng.uniform(0.5, 0.58), height * rng.uniform(0.5, 0.56)
    else:
        centre_y, half_h = height * rng.uniform(0.46, 0.54), height * rng.uniform(0.38, 0.45)
    # Outline: half ellipse from the chest wall, its edge perturbed so no two look alike.
    theta = np.arctan2((yy - centre_y) / half_h, xx / depth)
    wobble = 1.0 + 0.03 * np.sin(3 * theta + rng.uniform(0, 2 * np.pi))
    radial = np.sqrt((xx / depth) ** 2 + ((yy - centre_y) / half_h) ** 2) / wobble
    breast = radial < 1.0
    # Compressed-breast thickness falls towards the skin line.
    thickness = np.sqrt(np.clip(1.0 - radial**2, 0.0, 1.0))

    # Fibroglandular tissue: large blobs whose share grows with BI-RADS density (1-4).
    glands = _noise(rng, (height, width), 140 * scale / 0.25)
    threshold = {1: 1.0, 2: 0.5, 3: 0.0, 4: -0.5}[int(density)]
    gland = 1.0 / (1.0 + np.exp(-(glands - threshold) / 0.35))
    gland *= np.clip(thickness * 1.6, 0, 1) * np.clip(1.15 - radial, 0, 1)
    texture = (
        0.05 * _noise(rng, (height, width), 40 * scale / 0.25)
        + 0.03 * _noise(rng, (height, width), 12 * scale / 0.25)
        + 0.012 * rng.standard_normal((height, width)).astype(np.float32)
    )
    image = 0.28 + 0.22 * thickness**0.6 + 0.22 * gland + texture * (0.4 + 0.6 * gland)
    image = np.where(breast, image, 0.0)

    lesion_allowed = breast & (radial < 0.78) & (xx > 0.08 * depth)
    if view == "MLO":
        # Pectoral muscle: a bright, smooth triangle in the upper chest-wall corner.
        top = width * rng.uniform(0.28, 0.42)
        side = height * rng.uniform(0.35, 0.5)
        muscle = (xx / top + yy / side) < 1.0
        muscle_level = 0.62 + 0.05 * _noise(rng, (height, width), 60 * scale / 0.25)
        image = np.where(muscle, np.maximum(image, muscle_level), image)
        breast |= muscle
        lesion_allowed &= (xx / top + yy / side) > 1.25
    background = 0.02 + 0.006 * rng.standard_normal((height, width)).astype(np.float32)
    image = np.where(breast, image, background)
    return image.astype(np.float32), breast, lesion_allowed


def add_label_artifact(rng: np.random.Generator, image: np.ndarray, breast: np.ndarray) -> None:
    """Burn a scanner label (a bright block of glyph-like marks) into the background, as on
    digitised film: the reason breast-region cropping exists."""
    h, w = image.shape
    bh, bw = int(h * rng.uniform(0.03, 0.05)), int(w * rng.uniform(0.15, 0.25))
    y0 = int(rng.uniform(0.03, 0.1) * h) if rng.random() < 0.5 else int(h * rng.uniform(0.85, 0.92))
    x0 = w - bw - int(w * rng.uniform(0.03, 0.08))
    if breast[y0 : y0 + bh, x0 : x0 + bw].any():
        return
    glyphs = (rng.random((max(1, bh // 4), max(1, bw // 4))) < 0.45).astype(np.float32)
    image[y0 : y0 + bh, x0 : x0 + bw] = 0.9 * cv2.resize(
        glyphs, (bw, bh), interpolation=cv2.INTER_NEAREST
    )


SIDES = ("top", "bottom", "left", "right")


def draw_border_strip(
    rng: np.random.Generator,
    image: np.ndarray,
    *,
    side: str,
    thickness: int,
    start: int,
    length: int,
    inset: int = 0,
    level: float = 0.96,
) -> np.ndarray:
    """Draw one bright strip along ``side`` of ``image`` in place (``thickness`` pixels deep,
    ``inset`` pixels in from the edge, covering ``start`` to ``start + length`` along the
    edge) at about ``level`` with slight noise; return its boolean mask."""
    h, w = image.shape
    along = w if side in ("top", "bottom") else h
    start, stop = max(0, start), min(along, start + length)
    mask = np.zeros((h, w), bool)
    if side == "top":
        mask[inset : inset + thickness, start:stop] = True
    elif side == "bottom":
        mask[max(0, h - inset - thickness) : h - inset, start:stop] = True
    elif side == "left":
        mask[start:stop, inset : inset + thickness] = True
    elif side == "right":
        mask[start:stop, max(0, w - inset - thickness) : w - inset] = True
    else:
        raise ValueError(f"unknown side {side!r}; allowed: {', '.join(SIDES)}")
    noise = 0.01 * rng.standard_normal(int(mask.sum())).astype(np.float32)
    image[mask] = np.clip(level + noise, 0.9, 1.0)
    return mask


def add_border_strips(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Draw 0-3 bright strips along random sides of ``image`` in place, as on digitised film
    (unexposed film edge, label tape): near-saturated, from 2 px to about 2% of the
    perpendicular side thick, along all of a side or 20-100% of it, sometimes 1-2 px in from
    the edge. Return the boolean mask of the strip pixels drawn."""
    h, w = image.shape
    mask = np.zeros((h, w), bool)
    count = int(rng.integers(0, 4))
    for index in rng.choice(len(SIDES), size=count, replace=False):
        side = SIDES[int(index)]
        along, across = (w, h) if side in ("top", "bottom") else (h, w)
        thickness = int(rng.integers(2, max(2, round(0.02 * across)) + 1))
        if rng.random() < 0.4:
            start, length = 0, along
        else:
            length = max(1, int(along * rng.uniform(0.2, 1.0)))
            start = int(rng.integers(0, along - length + 1))
        inset = 0 if rng.random() < 0.7 else int(rng.integers(1, 3))
        mask |= draw_border_strip(
            rng,
            image,
            side=side,
            thickness=thickness,
            start=start,
            length=length,
            inset=inset,
            level=float(rng.uniform(0.92, 0.99)),
        )
    return mask


def _polar(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    return np.hypot(xx, yy), np.arctan2(yy, xx)


def render_mass(
    rng: np.random.Generator, *, malignant: bool, radius: float, difficulty: float
) -> Lesion:
    """A mass: smooth round/oval (benign) or irregular, ill-defined and spiculated (malignant)."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    size = int(np.ceil(radius * 5.2)) | 1
    rho, theta = _polar(size)
    outline = np.ones_like(theta)
    if malignant:
        amplitude = 0.26 * (1.0 - 0.55 * d)
        for k in range(3, 9):
            outline += (
                rng.uniform(0.3, 1.0)
                * amplitude
                / np.sqrt(k - 1)
                * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            )
        edge = radius * (0.10 + 0.05 * rng.random())
        spicules = int(round(rng.uniform(9, 18) * (1.0 - 0.6 * d)))
    else:
        ecc = rng.uniform(0.0, 0.2)
        outline += ecc * np.cos(2 * (theta - rng.uniform(0, np.pi)))
        for k in range(3, 6):  # gentle lobulation that grows with difficulty
            outline += 0.1 * d * rng.uniform(0, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        edge = radius * (0.035 + 0.05 * d)
        spicules = int(rng.binomial(4, 0.5 * d))
    boundary = radius * outline
    core = 1.0 / (1.0 + np.exp(-(boundary - rho) / edge))
    dome = 0.8 + 0.2 * np.clip(1.0 - (rho / boundary) ** 2, 0, 1)
    contrast = rng.uniform(0.14, 0.22) * (1.0 - 0.45 * d)
    intensity = contrast * core * dome

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    for _ in range(spicules):
        angle = rng.uniform(0, 2 * np.pi)
        start = radius * 0.8
        length = radius * rng.uniform(0.7, 1.6)
        ux, uy = np.cos(angle), np.sin(angle)
        along = xx * ux + yy * uy - start
        across = -xx * uy + yy * ux
        t = along / length
        width = max(0.7, radius * rng.uniform(0.025, 0.05))
        ray = np.exp(-(across**2) / (2 * width**2)) * np.clip(1 - t, 0, 1) * (t > 0)
        intensity = np.maximum(intensity, 0.75 * contrast * ray)
    mask = rho <= boundary * 1.05
    return Lesion(intensity.astype(np.float32), mask)


def _blob(canvas: np.ndarray, y: float, x: float, sy: float, sx: float, angle: float, amp: float):
    """Add an anisotropic Gaussian blob (one calcification particle) to ``canvas`` in place."""
    h, w = canvas.shape
    r = int(np.ceil(3 * max(sy, sx))) + 1
    y0, y1 = max(0, int(y) - r), min(h, int(y) + r + 1)
    x0, x1 = max(0, int(x) - r), min(w, int(x) + r + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - y, xx - x
    c, s = np.cos(angle), np.sin(angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    blob = amp * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], blob)


def render_calcifications(
    rng: np.random.Generator, *, malignant: bool, radius: float, difficulty: float, scale: float
) -> Lesion:
    """A calcification cluster: few coarse round particles spread out (benign) or many fine,
    pleomorphic particles tightly clustered (malignant)."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    px = scale / 0.25  # particle sizes are tuned at a quarter of real resolution
    size = int(np.ceil(radius * 3.2)) | 1
    canvas = np.zeros((size, size), np.float32)
    centre = (size - 1) / 2
    if malignant:
        count = int(rng.integers(int(16 - 8 * d), 40))
        spread = radius * rng.uniform(0.35, 0.5) * (1 + 0.5 * d)
        particle = (0.55 + 0.5 * d) * px
    else:
        count = int(rng.integers(3, int(9 + 12 * d)))
        spread = radius * rng.uniform(0.7, 0.95)
        particle = (2.2 - 1.0 * d) * px
    amp = rng.uniform(0.3, 0.45) * (1.0 - 0.35 * d)
    points = []
    for _ in range(count):
        if malignant:
            oy, ox = rng.normal(0, spread, 2)
        else:
            r, a = spread * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            oy, ox = r * np.sin(a), r * np.cos(a)
        y, x = centre + oy, centre + ox
        points.append((x, y))
        sigma = max(0.5, particle * rng.uniform(0.7, 1.3))
        if malignant and rng.random() < 0.5:
            # Pleomorphic: rods and branches along a random direction.
            angle = rng.uniform(0, np.pi)
            _blob(canvas, y, x, sigma, sigma * rng.uniform(2.0, 4.0), angle, amp)
            if rng.random() < 0.3:
                _blob(canvas, y, x, sigma, sigma * 2.5, angle + rng.uniform(0.6, 1.2), amp)
        else:
            _blob(canvas, y, x, sigma, sigma * rng.uniform(0.9, 1.2), rng.uniform(0, np.pi), amp)
    hull = cv2.convexHull(np.array(points, np.float32).reshape(-1, 1, 2)).astype(np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [hull], 1)
    grow = max(3, int(radius * 0.25)) | 1
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    return Lesion(canvas, mask.astype(bool))


def paste(image: np.ndarray, lesion: Lesion, centre: tuple[int, int]) -> np.ndarray:
    """Add ``lesion`` to ``image`` in place, centred at (y, x); return its full-size mask."""
    h, w = image.shape
    ph, pw = lesion.mask.shape
    y0, x0 = centre[0] - ph // 2, centre[1] - pw // 2
    sy0, sx0 = max(0, -y0), max(0, -x0)
    iy0, ix0 = max(0, y0), max(0, x0)
    iy1, ix1 = min(h, y0 + ph), min(w, x0 + pw)
    sub = (slice(iy0, iy1), slice(ix0, ix1))
    patch = (slice(sy0, sy0 + iy1 - iy0), slice(sx0, sx0 + ix1 - ix0))
    image[sub] += lesion.intensity[patch]
    full = np.zeros((h, w), bool)
    full[sub] = lesion.mask[patch]
    return full


def render_lesion(
    rng: np.random.Generator,
    *,
    kind: str,
    malignant: bool,
    radius: float,
    difficulty: float,
    scale: float,
) -> Lesion:
    """A mass or a calcification cluster (:func:`render_mass`, :func:`render_calcifications`)."""
    if kind == "mass":
        return render_mass(rng, malignant=malignant, radius=radius, difficulty=difficulty)
    return render_calcifications(
        rng, malignant=malignant, radius=radius, difficulty=difficulty, scale=scale
    )


def place(
    rng: np.random.Generator,
    image: np.ndarray,
    allowed: np.ndarray,
    lesion: Lesion,
    others: list[np.ndarray],
    radius: float,
) -> np.ndarray:
    """Paste ``lesion`` at a random allowed spot away from the ``others`` (so each ROI tile
    shows one finding); return its full-size mask."""
    free = allowed.copy()
    for other in others:
        ys, xs = np.nonzero(other)
        cy, cx, r = int(ys.mean()), int(xs.mean()), int(radius * 4)
        free[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = False
    ys, xs = np.nonzero(free if free.any() else allowed)
    pick = int(rng.integers(len(ys)))
    return paste(image, lesion, (int(ys[pick]), int(xs[pick])))
