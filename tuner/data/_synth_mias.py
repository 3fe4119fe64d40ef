"""Synthetic mini-MIAS: 1024 x 1024 8-bit PGM mammograms (MLO views, pairs of breasts per
woman) and ``Info.txt`` with the real quirks: centre y counted from the bottom, normal images
without class data, several rows for one image, and abnormal rows without coordinates
(``*NOTE 3*`` or none). Like the real scans, many carry a burnt-in label and bright strips
along the film's edges."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from tuner import storage
from tuner.data import _phantom
from tuner.data.mini_mias import INFO, SIDE

__all__ = ["plan", "render", "finish"]

SCALE = 0.25  # mini-MIAS has 200 um per pixel, a quarter of CBIS-DDSM's resolution
TISSUE = {1: "F", 2: "G", 3: "D", 4: "D"}
MASS_CLASSES = {True: ("SPIC", "MISC", "ARCH"), False: ("CIRC", "MISC", "ASYM")}


@dataclass
class _Image:
    index: int  # 1-based: mdb001, mdb002, ...
    density: int
    findings: list[dict] = field(default_factory=list)  # kind, malignant, radius, seed


def plan(params) -> list[_Image]:
    """Two images (left and right breast) per synthetic woman; about a third abnormal."""
    rng = np.random.default_rng(params.seed)
    images = []
    for woman in range(params.patients):
        density = int(rng.integers(1, 5))
        for side in range(2):
            image = _Image(2 * woman + side + 1, density)
            count = 0 if rng.random() > 0.36 else (2 if rng.random() < 0.05 else 1)
            for _ in range(count):
                kind = "calcification" if rng.random() < 0.25 else "mass"
                low, high = (80, 220) if kind == "mass" else (60, 160)
                image.findings.append(
                    {
                        "kind": kind,
                        "malignant": bool(rng.random() < params.malignant_fraction),
                        "radius": float(rng.uniform(low, high)) * SCALE,
                        "seed": int(rng.integers(2**31)),
                        # A few rows in the real Info.txt have no coordinates.
                        "located": bool(rng.random() > 0.04),
                    }
                )
            images.append(image)
    return images


def render(args: tuple) -> list[str]:
    """Render and write one image; return its Info.txt rows."""
    params, image, out = args
    rng = np.random.default_rng([params.seed, image.index])
    width = int(SIDE * rng.uniform(0.55, 0.7))
    breast_img, breast, allowed = _phantom.render_breast(
        rng, SIDE, width, view="MLO", density=image.density, scale=SCALE
    )
    canvas = np.full((SIDE, SIDE), 0.02, np.float32)
    canvas[:, :width] = breast_img
    allowed_full = np.zeros((SIDE, SIDE), bool)
    allowed_full[:, :width] = allowed
    breast_full = np.zeros((SIDE, SIDE), bool)
    breast_full[:, :width] = breast
    if rng.random() < 0.7:
        _phantom.add_label_artifact(rng, canvas, breast_full)
    masks, rows = [], []
    ref = f"mdb{image.index:03d}"
    tissue = TISSUE[image.density]
    for finding in image.findings:
        lesion = _phantom.render_lesion(
            np.random.default_rng(finding["seed"]),
            kind=finding["kind"],
            malignant=finding["malignant"],
            radius=finding["radius"],
            difficulty=params.difficulty,
            scale=SCALE,
        )
        masks.append(_phantom.place(rng, canvas, allowed_full, lesion, masks, finding["radius"]))
    # Bright strips along the film's edges, as on many real scans, from a generator of their
    # own: the phantom, its lesions and Info.txt stay those of the same seed without them.
    strips = np.random.default_rng([params.seed, image.index, 1])
    if strips.random() < 0.5:
        _phantom.add_border_strips(strips, canvas)
    if image.index % 2 == 0:  # the right breast of the pair: chest wall on the right
        canvas = canvas[:, ::-1]
        masks = [m[:, ::-1] for m in masks]
    for finding, mask in zip(image.findings, masks, strict=True):
        name = (
            "CALC"
            if finding["kind"] == "calcification"
            else str(rng.choice(MASS_CLASSES[finding["malignant"]]))
        )
        severity = "M" if finding["malignant"] else "B"
        if not finding["located"]:
            rows.append(
                f"{ref} {tissue} {name} {severity} *NOTE 3* "
                if rng.random() < 0.5
                else f"{ref} {tissue} {name} {severity}"
            )
            continue
        ys, xs = np.nonzero(mask)
        cy, cx = float(ys.mean()), float(xs.mean())
        radius = int(np.ceil(np.hypot(ys - cy, xs - cx).max())) + 1
        rows.append(
            f"{ref} {tissue} {name} {severity} {int(round(cx))} {SIDE - int(round(cy))} {radius}"
        )
    if not rows:
        rows.append(f"{ref} {tissue} NORM ")
    pixels = (np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".pgm", np.ascontiguousarray(pixels))
    assert ok
    storage.write_bytes(storage.join(out, f"{ref}.pgm"), encoded.tobytes())
    return rows


def finish(out: str, rows: list[str]) -> dict:
    """Write Info.txt; return counts for the summary."""
    storage.write_bytes(storage.join(out, INFO), ("\n".join(rows) + "\n").encode("ascii"))
    refs = {r.split()[0] for r in rows}
    abnormal = [r for r in rows if " NORM" not in r]
    return {
        "images": len(refs),
        "abnormalities": len(abnormal),
        "patients": len({(int(r[3:6]) + 1) // 2 for r in refs}),
        "malignant": sum(r.split()[3] == "M" for r in abnormal),
    }
