"""Export bundles: a model a hospital's inference stack can load without mammotune's training
code, with everything needed to feed it as it was trained.

A bundle is a folder (or bucket prefix)::

    bundle.json          format, version, runtime, input/output, classes, threshold, checksums
    model.onnx|model.pt  the whole model as one graph: raw tiles in, calibrated probabilities out
    preprocessing.json   how a file becomes the model's input (the one preprocessing path)
    model_card.json      the model card (tuner.results.model_card)

The graph takes float32 tiles (N, 1, H, W) with values 0-255 (the uint8 pixels of
``preprocessing.json``'s path); normalisation, an ensemble's averaging over its members, flip
TTA and the temperature are inside it, so its output is what ``predict`` reports. ONNX goes
through PyTorch's TorchScript-based exporter (``dynamo=False``: no onnxscript, exact on the
backbones here) and runs in ONNX Runtime; TorchScript is a traced module that also carries
``explain`` (each member's logits and Grad-CAM layer output) for heatmaps.

Every file's SHA-256 is in ``bundle.json``: a bundle whose files were edited by mistake is
refused. That is no protection against someone who can write the bundle (they can rewrite
``bundle.json`` too), and a TorchScript bundle is code that runs when loaded: the SHA-256
of ``bundle.json`` itself (:attr:`Bundle.sha256`, printed by ``export``) pins every file,
and ``open_bundle(url, expect_sha256=...)`` (``predict --expect-sha256``) refuses any other
bundle before loading anything from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tuner import __version__, storage
from tuner.data.preprocess import Preprocessing
from tuner.errors import UserError, unknown_choice
from tuner.models.classifier import class_probabilities
from tuner.results.evaluate import json_safe
from tuner.training.checkpoint import load_checkpoint

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "EXPORT_FORMATS",
    "EnsembleGraph",
    "Bundle",
    "export_model",
    "is_bundle",
    "open_bundle",
    "cam_layer",
]

# The newest format version this mammotune reads. Version 2 is a two-view bundle (input
# N x 2 x H x W, preprocessing "views"), written as 2 so that a mammotune that reads only
# single-view bundles refuses it with "upgrade" rather than a shape error; single-view
# bundles are still written as version 1.
BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION = "bundle.json", "mammotune-bundle", 2
EXPORT_FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
PREPROCESSING_FILE, CARD_FILE = "preprocessing.json", "model_card.json"
INPUT, OUTPUT = "tiles", "probabilities"
OPSET = 17
PARITY = 1e-4  # the most an exported graph may differ from PyTorch, in probability


def cam_layer(model: nn.Module, sample: torch.Tensor) -> nn.Module:
    """The layer Grad-CAM looks at: the last module of the backbone (or stem) to finish with
    a spatial map (N, C, h, w), h and w >= 2, on ``sample``: the last convolutional stage
    before global pooling, whichever backbone it is."""
    found: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, _, out: (
                found.append(mod)
                if isinstance(out, torch.Tensor) and out.dim() == 4 and min(out.shape[2:]) >= 2
                else None
            )
        )
        for m in [*model.stem.modules(), *model.backbone.modules()]
    ]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    if not found:
        raise UserError("the model has no spatial layer to look at (input too small?)")
    return found[-1]


class EnsembleGraph(nn.Module):
    """Members' softmax probabilities averaged (over the four flips with ``tta``), then
    temperature-scaled: the exported graph. ``explain`` returns, per member, its logits and
    its Grad-CAM layer's output on the unflipped tiles."""

    def __init__(self, members: list[nn.Module], *, tta: bool, temperature: float, sample):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta = tta
        self.temperature = float(temperature)
        self._kept: list[torch.Tensor] = []
        self._explaining = False  # a Python flag: read while tracing, not in the graph
        for layer in [cam_layer(m, sample) for m in members]:
            layer.register_forward_hook(
                lambda mod, _, out: self._kept.append(out) if self._explaining else None
            )

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        p = torch.stack([class_probabilities(m, tiles, tta=self.tta) for m in self.members])
        p = p.mean(0)
        if self.temperature != 1.0:  # tuner.training.checkpoint.temper, in torch
            p = torch.softmax(torch.log(p.clamp_min(1e-12)) / self.temperature, dim=1)
        return p

    def explain(self, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: list[torch.Tensor] = []
        self._explaining = True
        try:
            for member in self.members:
                self._kept.clear()
                out += [member(tiles), self._kept[-1]]
        finally:
            self._explaining = False
        return tuple(out)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta_digest(meta: dict) -> str:
    """SHA-256 of bundle.json's own fields (threshold, classes, runtime...), canonical JSON."""
    fields = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return _sha256(json.dumps(json_safe(fields), sort_keys=True).encode())


def _preprocessing_json(preprocessing: Preprocessing, model_args: dict) -> dict:
    h, w = preprocessing.input_shape
    return {
        **preprocessing.to_json(),
        "input": {
            "name": INPUT,
            "shape": [None, preprocessing.views, h, w],
            "dtype": "float32",
            "values": "0-255: the uint8 pixels this path makes, as float32",
            "channels": preprocessing.views,
            **(
                {"views": ["CC", "MLO"], "breast": "both files of one breast, CC first"}
                if preprocessing.views == 2
                else {}
            ),
        },
        "normalisation": {
            "inside_model": True,
            "mean": model_args["mean"] * 255.0,
            "std": model_args["std"] * 255.0,
        },
        "steps": [
            "decode: DICOM (pydicom; GDCM/pylibjpeg for compressed) or PNG/JPEG/TIFF (OpenCV), "
            "greyscale, bright = dense",
            "window to 8 bits between the 0.1st and 99.9th percentiles",
            "breast region: Otsu threshold on a <=512 px copy, largest component, holes "
            "filled; everything outside set to 0 (not for a ROI crop given alone)",
            f"enhancement: {preprocessing.enhance} (gaussian sigma 0.5 then equalize/CLAHE "
            "2.0, 8x8, when not none)",
            (
                f"whole view: crop to the breast, chest wall left, pad to 1.5:1, resize to "
                f"{h}x{w} (via {list(preprocessing.resized_from)} first, INTER_AREA)"
                if preprocessing.view == "whole"
                else f"roi view: a square tile centred on the finding, side max(context_px="
                f"{preprocessing.context_px}, 1.2 x the ROI's larger side) (1.05 x when "
                f"larger), zero padded past the edge, resized to {h}x{w}; a crop given "
                "alone: its centred square"
            ),
        ],
        "implementation": "tuner.data.single.model_input (mammotune), the path prepare "
        "made the training tiles by",
    }


def _export_file(graph: EnsembleGraph, fmt: str, sample: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Both exporters are deprecated upstream in favour of torch.export; they still give
        # the plainest file for ONNX Runtime and libtorch.
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                torch.onnx.export(
                    graph,
                    (sample,),
                    path,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
                with open(path, "rb") as f:
                    return f.read()
        traced = torch.jit.trace_module(graph, {"forward": sample, "explain": sample})
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def export_model(source: str, out: str, *, fmt: str = "onnx", log=None) -> dict:
    """Export the model ``source`` stands for (a checkpoint, a final model, a promotion, a
    trial or an experiment: see :func:`tuner.results.sources.resolve_model`) as a bundle in
    ``out``, a folder or URL that must not exist yet. Returns ``bundle.json``'s content
    (with ``"url"``).

    The exported graph is run once against the PyTorch model on a batch of random tiles
    and the largest difference in probability is recorded (``verified_max_abs_diff``).

    Raises:
        UserError: an unknown format, ``out`` exists, a source that is nothing loadable or an
            errored trial, or members trained on different inputs.
    """
    from tuner.results.model_card import model_card
    from tuner.results.sources import resolve_model

    if fmt not in EXPORT_FORMATS:
        raise UserError(unknown_choice("export format", fmt, EXPORT_FORMATS))
    out = storage.normalize(out)
    storage.check_location(out)
    fs, path = storage.filesystem(out)
    if fs.exists(path):
        raise UserError(f"{out} exists; export into a new folder (nothing is overwritten)")
    models, found = resolve_model(source)
    emit = log or (lambda message: None)
    emit(f"exporting {found['kind']} {models.url} ({len(models.members)} member(s)) as {fmt}")
    loaded = [load_checkpoint(m)[:2] for m in models.members]
    meta = loaded[0][1]
    preprocessing = Preprocessing.from_checkpoint_meta(meta)
    if any(Preprocessing.from_checkpoint_meta(m) != preprocessing for _, m in loaded):
        raise UserError(f"{models.url}: its members were trained on different inputs")
    h, w = preprocessing.input_shape
    views = preprocessing.views  # 2 for a two-view model: CC and MLO of one breast
    sample = torch.rand(4, views, h, w, generator=torch.Generator().manual_seed(0)) * 255
    graph = EnsembleGraph(
        [m for m, _ in loaded], tta=models.tta, temperature=models.temperature, sample=sample
    ).eval()
    started = time.perf_counter()
    model_bytes = _export_file(graph, fmt, sample)
    with torch.no_grad():
        reference = graph(sample).numpy()
    card = model_card(models, experiment=found["experiment"])
    files = {
        EXPORT_FORMATS[fmt]: model_bytes,
        PREPROCESSING_FILE: _json_bytes(_preprocessing_json(preprocessing, meta["model_args"])),
        CARD_FILE: _json_bytes(card),
    }
    classes = meta["task"]["classes"]
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": 1 if views == 1 else 2,
        "runtime": fmt,
        "model_file": EXPORT_FORMATS[fmt],
        "input": {"name": INPUT, "shape": [None, views, h, w], "dtype": "float32"},
        "output": {"name": OUTPUT, "classes": classes, "probabilities": True},
        "task": meta["task"]["name"],
        "classes": classes,
        "threshold": models.threshold if len(classes) == 2 else None,
        "temperature": models.temperature,
        "tta": models.tta,
        "members": len(models.members),
        "opset": OPSET if fmt == "onnx" else None,
        "source": found,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mammotune_version": __version__,
        "torch_version": torch.__version__,
        "files": {name: _sha256(data) for name, data in files.items()},
    }
    # Check the written graph before anything lands in ``out``.
    difference = float(np.abs(_run_bytes(fmt, model_bytes, sample.numpy()) - reference).max())
    if not difference <= PARITY:
        raise UserError(
            f"the {fmt} graph of {models.url} differs from PyTorch by {difference:.1e} in "
            f"probability (allowed {PARITY:.0e}); nothing was written: try the other format "
            "and report this model's backbone"
        )
    bundle["verified_max_abs_diff"] = difference
    bundle["export_seconds"] = round(time.perf_counter() - started, 2)
    bundle["meta_sha256"] = _meta_digest(bundle)
    for name, data in files.items():
        storage.write_bytes(storage.join(out, name), data)
    meta_bytes = _json_bytes(bundle)
    storage.write_bytes(storage.join(out, BUNDLE_FILE), meta_bytes)  # last: complete
    emit(f"wrote {out} (max |difference| to PyTorch {bundle['verified_max_abs_diff']:.1e})")
    return {**bundle, "url": out, "sha256": _sha256(meta_bytes)}


def _json_bytes(obj) -> bytes:
    return (json.dumps(json_safe(obj), indent=2) + "\n").encode()


def _session(fmt: str, model_bytes: bytes):
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:  # pragma: no cover - a dependency, but say how to get it
            raise UserError("ONNX bundles run with ONNX Runtime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(
            model_bytes, options, providers=["CPUExecutionProvider"]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(io.BytesIO(model_bytes), map_location="cpu").eval()


def _run(fmt: str, session, tiles: np.ndarray) -> np.ndarray:
    tiles = np.ascontiguousarray(tiles, dtype=np.float32)
    if fmt == "onnx":
        return session.run([OUTPUT], {INPUT: tiles})[0]
    with torch.no_grad():
        return session(torch.from_numpy(tiles)).numpy()


def _run_bytes(fmt: str, model_bytes: bytes, tiles: np.ndarray) -> np.ndarray:
    return _run(fmt, _session(fmt, model_bytes), tiles)


def is_bundle(url: str) -> bool:
    """Whether ``url`` is an export bundle (holds ``bundle.json``)."""
    return storage.exists(storage.join(storage.normalize(url), BUNDLE_FILE))


@dataclass
class Bundle:
    """An opened, checked export bundle: run it with :meth:`probabilities`."""

    url: str
    meta: dict  # bundle.json
    preprocessing: Preprocessing
    card: dict
    _session: object = field(repr=False, default=None)
    sha256: str = ""  # of bundle.json's bytes, which list every other file's SHA-256

    @classmethod
    def open(cls, url: str, *, expect_sha256: str | None = None) -> Bundle:
        """:func:`open_bundle`: the bundle at ``url``, checked."""
        return open_bundle(url, expect_sha256=expect_sha256)

    def to_dict(self) -> dict:
        """``bundle.json``, with the bundle's ``url`` and ``sha256``."""
        return {**self.meta, "url": self.url, "sha256": self.sha256}

    @property
    def runtime(self) -> str:
        return self.meta["runtime"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def threshold(self) -> float | None:
        return self.meta.get("threshold")

    @property
    def module(self):
        """The TorchScript module (torchscript bundles): ``forward`` and ``explain``."""
        if self.runtime != "torchscript":
            raise UserError(
                f"{self.url} is an {self.runtime} bundle; Grad-CAM needs gradients: use a "
                "torchscript bundle (export --format torchscript) or the checkpoint"
            )
        return self._session

    def probabilities(self, tiles: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities for uint8 or float tiles (N, H, W) or (N, 1, H, W);
        a two-view bundle's (N, 2, H, W), each sample a breast's CC then MLO."""
        tiles = np.asarray(tiles)
        if tiles.ndim == 3:
            tiles = tiles[:, None]
        return _run(self.runtime, self._session, tiles)


def open_bundle(url: str, *, expect_sha256: str | None = None) -> Bundle:
    """Open an export bundle, checking its format version and every file's checksum.

    Args:
        expect_sha256: the SHA-256 of ``bundle.json`` as ``export`` printed it, got from a
            place you trust: any other bundle is refused before anything in it is loaded
            (a TorchScript bundle is code).

    Raises:
        UserError: not a bundle, another bundle than ``expect_sha256`` names, a newer format
            version than this mammotune reads, a file missing or edited since export, a
            file list naming paths outside the bundle.
    """
    url = storage.normalize(url)
    if expect_sha256 is not None:
        expect_sha256 = str(expect_sha256).strip().lower().removeprefix("sha256:")
        storage.check_sha256(expect_sha256, what="--expect-sha256")
    storage.check_location(url)
    meta_url = storage.join(url, BUNDLE_FILE)
    if not storage.exists(meta_url):
        raise UserError(f"{url} is not an export bundle ({BUNDLE_FILE} not found)")
    meta_bytes = storage.read_bytes(meta_url)
    digest = _sha256(meta_bytes)
    if expect_sha256 is not None and digest != expect_sha256:
        raise UserError(
            f"{url} is not the bundle you expected: its {BUNDLE_FILE} has SHA-256 {digest}, "
            f"not {expect_sha256}; nothing in it was loaded"
        )
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        raise UserError(f"{meta_url} is not valid JSON; export the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{meta_url}: not a mammotune bundle (format {BUNDLE_FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int):
        raise UserError(f"{meta_url}: no format version; export the model again")
    if version > BUNDLE_VERSION:
        raise UserError(
            f"{url} is a bundle of format version {version}, newer than this "
            f"mammotune {__version__} reads ({BUNDLE_VERSION}): upgrade mammotune"
        )
    if meta.get("meta_sha256") != _meta_digest(meta):
        raise UserError(
            f"{meta_url} was changed after export (its fields no longer match its SHA-256); "
            "export the model again rather than editing a bundle"
        )
    if meta.get("runtime") not in EXPORT_FORMATS or not isinstance(meta.get("files"), dict):
        raise UserError(f"{meta_url}: unknown runtime {meta.get('runtime')!r}")
    needed = {meta.get("model_file"), PREPROCESSING_FILE, CARD_FILE}
    if meta.get("model_file") != EXPORT_FORMATS[meta["runtime"]] or not needed <= set(
        meta["files"]
    ):
        raise UserError(
            f"{meta_url}: its file list does not name {', '.join(sorted(map(str, needed)))}; "
            "export the model again"
        )
    contents = {}
    for name, file_digest in meta["files"].items():
        file_url = storage.join_under(url, name, what="bundle file")
        storage.check_sha256(file_digest, what=f"{BUNDLE_FILE}'s digest of {name!r}")
        if not storage.exists(file_url):
            raise UserError(f"{url}: {name} is missing; copy the bundle folder whole")
        data = storage.read_bytes(file_url)
        if _sha256(data) != file_digest:
            raise UserError(
                f"{file_url} was changed after export (its SHA-256 differs from bundle.json's); "
                "export the model again rather than editing a bundle"
            )
        contents[name] = data
    prep = json.loads(contents[PREPROCESSING_FILE])
    preprocessing = Preprocessing(
        view=prep["view"],
        size=int(prep["size"]),
        enhance=prep["enhance"],
        context_px=prep.get("context_px"),
        resized_from=tuple(prep.get("resized_from", ())),
        views=int(prep.get("views", 1)),
    )
    session = _session(meta["runtime"], contents[meta["model_file"]])
    return Bundle(url, meta, preprocessing, json.loads(contents[CARD_FILE]), session, digest)
