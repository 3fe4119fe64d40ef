"""The ``mammotune`` command line: a thin face over :mod:`tuner`'s Python API.

Each command parses its flags, calls the API and prints through :mod:`tuner.present`.
User mistakes print one line naming the problem and the fix and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from tuner import present
from tuner.errors import UserError

console, errors = present.consoles()


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of sizes"
        ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: give x0,y0,x1,y1 in the image's pixels")
    return values


def _max_pixels(p) -> None:
    """``--max-pixels``, for the commands that decode image files (prepare, predict)."""
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        default=None,
        help="the most pixels an image file may declare; larger files are refused before "
        "decoding (default: MAMMOTUNE_MAX_PIXELS, else tuner.data.limits.MAX_PIXELS, 100 "
        "million)",
    )


def _show(args, result, printer) -> None:
    """``--json``: the result as JSON; otherwise ``printer`` draws it."""
    if getattr(args, "json", False):
        present.print_json(result.to_dict())
    else:
        printer(console, result)


# ------------------------------------------------------------------------------ commands
def _quickstart(commands) -> None:
    p = commands.add_parser("quickstart", help="synth -> prepare -> search -> best, on a CPU")
    p.add_argument("--workdir", default="mammotune-quickstart", help="where everything goes")
    p.add_argument("--patients", type=int, default=240, help="synthetic patients")
    p.add_argument("--trials", type=int, default=None, help="override the preset's trials")
    p.set_defaults(run=cmd_quickstart)


def cmd_quickstart(args) -> None:
    from tuner.quickstart import run_quickstart

    run_quickstart(args.workdir, patients=args.patients, trials=args.trials, console=console)


def _synth(commands) -> None:
    p = commands.add_parser("synth", help="write a synthetic CBIS-DDSM or mini-MIAS dataset")
    p.add_argument("out", help="output folder or URL")
    p.add_argument("--format", default="cbis-ddsm", help="cbis-ddsm or mini-mias")
    p.add_argument(
        "--layout",
        default="csv",
        help="CBIS-DDSM files: csv (the CSVs' paths), archive (a TCIA download) or "
        "jpeg-edition (the community JPEG edition)",
    )
    p.add_argument(
        "--patients", type=int, default=200, help="patients (mini-MIAS: women, 2 images each)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=0.5, help="0 (obvious) to 1 (subtle)")
    p.add_argument(
        "--scale", type=float, default=0.25, help="CBIS-DDSM: fraction of real resolution"
    )
    p.add_argument(
        "--one-view-fraction",
        type=float,
        default=0.0,
        help="CBIS-DDSM: fraction of findings seen in one view only (occult in the other)",
    )
    p.set_defaults(run=cmd_synth)


def cmd_synth(args) -> None:
    from rich.progress import Progress

    import tuner

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rendering images", total=None)
        result = tuner.synth(
            args.out,
            format=args.format,
            layout=args.layout,
            patients=args.patients,
            seed=args.seed,
            difficulty=args.difficulty,
            scale=args.scale,
            one_view_fraction=args.one_view_fraction,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    present.synthetic(console, result)


def _prepare(commands) -> None:
    p = commands.add_parser(
        "prepare", help="a CBIS-DDSM or mini-MIAS folder -> tile shards + manifest.json"
    )
    p.add_argument(
        "source",
        help="folder or URL: CBIS-DDSM (CSVs + DICOM tree, or the JPEG edition's csv/ + jpeg/) "
        "or mini-MIAS (Info.txt + PGMs)",
    )
    p.add_argument("out", help="dataset folder or URL (a local path, file://, s3://, memory://)")
    p.add_argument(
        "--source-kind",
        default=None,
        help="cbis-ddsm (DICOM), cbis-ddsm-jpeg (JPEG edition) or mini-mias (default: "
        "recognised from the files; a folder with both CBIS-DDSM editions must say)",
    )
    p.add_argument(
        "--views", type=_names, default=("roi",), help="roi and/or whole, e.g. roi,whole"
    )
    p.add_argument("--sizes", type=_sizes, default=(224,), help="ROI tile sizes, e.g. 224,299")
    p.add_argument(
        "--whole-sizes", type=_sizes, default=(512,), help="whole-image long sides, e.g. 512,1024"
    )
    p.add_argument(
        "--enhance", type=_names, default=("none",), help="none, equalize, clahe (several: a,b)"
    )
    p.add_argument(
        "--context-px",
        type=int,
        default=None,
        help="ROI tile side in source pixels (default: 598 CBIS-DDSM, 150 mini-MIAS)",
    )
    p.add_argument("--train-variants", type=int, default=4, help="random crops per training ROI")
    p.add_argument("--tissue-tiles", type=int, default=1, help="background-tissue tiles per image")
    p.add_argument("--val-fraction", type=float, default=0.2, help="of training patients")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="of patients, when the source has no official split",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    _max_pixels(p)
    p.set_defaults(run=cmd_prepare)


def cmd_prepare(args) -> None:
    import tuner

    data = tuner.prepare(
        args.source,
        args.out,
        source_kind=args.source_kind,
        views=args.views,
        sizes=args.sizes,
        whole_sizes=args.whole_sizes,
        enhance=args.enhance,
        context_px=args.context_px,
        train_variants=args.train_variants,
        tissue_tiles=args.tissue_tiles,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        address=args.address,
        max_pixels=args.max_pixels,
        log=console.print,
    )
    present.dataset(console, data)


def _search(commands) -> None:
    p = commands.add_parser("search", help="run an Optuna-guided Ray Tune search")
    p.add_argument("--space", help="space file or preset name (quick, divide_and_conquer, ...)")
    p.add_argument("--data", help="prepared dataset folder or URL")
    p.add_argument("--storage", help="experiment folder or URL (new)")
    p.add_argument(
        "--resume",
        metavar="EXPERIMENT",
        help="continue the interrupted search at this --storage location",
    )
    p.add_argument("--trials", type=int, default=None, help="override the space's trial count")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override the space: epochs=2, backbone=[vgg19,resnet50], resources.gpu=0.5, "
        "sampler.type=gp, scheduler.grace_period=2",
    )
    p.add_argument("--cpus-per-trial", type=float, default=None, help="override resources.cpu")
    p.add_argument(
        "--gpus-per-trial", type=float, default=None, help="override resources.gpu (0.5: two/GPU)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="folder/URL with ImageNet files and mini-MIAS models (weights fetch, pretrain-mias)",
    )
    p.add_argument(
        "--study",
        default=None,
        help="Optuna storage, an SQLAlchemy URL (postgresql://USER@HOST/DB, password from "
        "PGPASSWORD); default: SQLite beside a local experiment, or copied into a bucket "
        "experiment at every snapshot. With --resume: the storage again, if not recorded",
    )
    p.add_argument(
        "--max-failures", type=int, default=1, help="retries of an errored trial (default 1)"
    )
    p.add_argument(
        "--reuse-actors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recycle trial worker processes (default; each trial frees its model and CUDA "
        "cache at its end); --no-reuse-actors: a fresh process per trial",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.set_defaults(run=cmd_search)


def cmd_search(args) -> None:
    import tuner
    from tuner.config import parse_overrides

    if args.resume:
        given = [f"--{n}" for n in ("space", "data", "storage") if getattr(args, n) is not None]
        if given:
            raise UserError(
                f"--resume continues the search as it was started; drop {', '.join(given)}"
            )
        experiment = tuner.Experiment(args.resume).resume(
            address=args.address, study=args.study, log=console.print
        )
    else:
        missing = [f"--{n}" for n in ("space", "data", "storage") if getattr(args, n) is None]
        if missing:
            raise UserError(f"search needs {', '.join(missing)} (or --resume EXPERIMENT)")
        experiment = tuner.search(
            args.space,
            data=args.data,
            storage=args.storage,
            trials=args.trials,
            overrides=parse_overrides(args.set or []),
            address=args.address,
            weights=args.weights,
            study=args.study,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_failures=args.max_failures,
            reuse_actors=args.reuse_actors,
            console=console,
            log=console.print,
        )
    present.leaderboard(console, experiment.leaderboard())


def _submit(commands) -> None:
    p = commands.add_parser(
        "submit",
        help="run a mammotune command on a cluster through Ray's Jobs API",
        description="Submit `mammotune COMMAND ...` as a Ray job, shipping --working-dir with "
        "it, and follow its log. The token comes from RAY_AUTH_TOKEN (Ray's token "
        "authentication); storage credentials are the cluster's own.",
    )
    p.add_argument(
        "--address",
        default=None,
        help="the Jobs API: http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS)",
    )
    p.add_argument("--working-dir", default=".", help="folder shipped with the job (default: .)")
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="environment variable for the job (no secrets), e.g. AWS_ENDPOINT_URL=...",
    )
    p.add_argument("--job-id", default=None, help="submission id (default: Ray's)")
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.add_argument("job", nargs=argparse.REMAINDER, help="-- search --space ... (the job)")
    p.set_defaults(run=cmd_submit)


def cmd_submit(args) -> int:
    import tuner

    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    job = tuner.submit(
        command,
        address=args.address,
        working_dir=args.working_dir,
        env=args.env or [],
        job_id=args.job_id,
    )
    console.print(f"submitted job {job.id} to {job.address}: mammotune {' '.join(command)}")
    console.print(f"  dashboard: {job.dashboard}", soft_wrap=True)
    if args.no_wait:
        console.print(f"  follow it with: ray job logs --address {job.address} --follow {job.id}")
        return 0
    try:
        status = job.follow(lambda text: console.print(text, soft_wrap=True))
    except KeyboardInterrupt:
        errors.print(
            f"stopped following; job {job.id} goes on (ray job logs --address {job.address} "
            f"--follow {job.id}; ray job stop ... {job.id} to stop it)"
        )
        return 130
    console.print(f"job {job.id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _pretrain_mias(commands) -> None:
    p = commands.add_parser(
        "pretrain-mias",
        help="train the mini-MIAS models that transfer degrees mias_all and imagenet_mias_head use",
    )
    p.add_argument("--data", required=True, help="a prepared mini-MIAS dataset")
    p.add_argument(
        "--weights", required=True, help="weights folder/URL: ImageNet files in, models out"
    )
    p.add_argument("--backbones", type=_names, required=True, help="e.g. mobilenet_v2,resnet50")
    p.add_argument("--view", default="whole", help="roi or whole (default: whole, as published)")
    p.add_argument("--size", type=int, default=224, help="tile side or whole-image long side")
    p.add_argument("--enhance", default="none", help="none, equalize or clahe")
    p.add_argument("--head-epochs", type=int, default=5, help="backbone frozen")
    p.add_argument("--all-epochs", type=int, default=10, help="every layer, lr x 0.1")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_pretrain_mias)


def cmd_pretrain_mias(args) -> None:
    import tuner

    results = tuner.pretrain_mias(
        args.data,
        args.weights,
        args.backbones,
        view=args.view,
        size=args.size,
        enhance=args.enhance,
        head_epochs=args.head_epochs,
        all_epochs=args.all_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        log=console.print,
    )
    present.pretrained(console, results)


def _weights(commands) -> None:
    p = commands.add_parser("weights", help="pretrained weights (explicit downloads)")
    weights = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = weights.add_parser(
        "fetch", help="download torchvision's ImageNet weights into a folder or bucket"
    )
    p.add_argument("dest", help="folder or URL (pass it to search --weights)")
    p.add_argument(
        "--backbones", type=_names, default=(), help="default: the five published backbones"
    )
    p.add_argument("--base-url", default=None, help="a mirror with torchvision's file names")
    p.set_defaults(run=cmd_weights_fetch)


def cmd_weights_fetch(args) -> None:
    import tuner

    for url, what in tuner.fetch_weights(args.dest, args.backbones, base_url=args.base_url):
        console.print(f"{url}: {what}")


def _evaluate(commands) -> None:
    p = commands.add_parser(
        "evaluate", help="metrics with CIs, thresholds, per-breast figures and plots on a split"
    )
    p.add_argument("target", help="a checkpoint folder/URL, or an experiment (its best)")
    p.add_argument("--data", required=True, help="prepared dataset folder or URL")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--report", metavar="DIR", help="write report.json, CSVs and PNGs here (new)")
    p.add_argument(
        "--ensemble", type=int, default=1, help="average the experiment's K best checkpoints"
    )
    p.add_argument("--target-recall", type=float, default=0.9, help="threshold table goal")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="operating threshold (default: a final model's, from OOF; else 0.5)",
    )
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (patients)")
    p.add_argument(
        "--allow-mixed-editions",
        action="store_true",
        help="evaluate a model trained on one CBIS-DDSM edition (DICOM/JPEG) on the other's",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_evaluate)


def cmd_evaluate(args) -> None:
    import tuner

    result = tuner.evaluate(
        args.target,
        data=args.data,
        split=args.split,
        ensemble=args.ensemble,
        target_recall=args.target_recall,
        resamples=args.resamples,
        threshold=args.threshold,
        report=args.report,
        allow_mixed_editions=args.allow_mixed_editions,
    )
    _show(args, result, present.evaluation)


def _predict(commands) -> None:
    p = commands.add_parser("predict", help="class probabilities for DICOM or PNG files")
    p.add_argument(
        "checkpoint",
        help="checkpoint, final model (promotions/<id>/final) or export bundle (mammotune export)",
    )
    p.add_argument("files", nargs="+", help="DICOM, PNG, PGM, JPEG or TIFF files")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="positive-class threshold (default: a final model's own, else 0.5)",
    )
    p.add_argument(
        "--roi-mask",
        metavar="FILE",
        default=None,
        help="ROI models: the finding's mask in the (one) full mammogram given, e.g. the "
        "CBIS-DDSM ROI mask; the tile is cut as prepare cut it",
    )
    p.add_argument(
        "--roi-box",
        metavar="X0,Y0,X1,Y1",
        type=_box,
        default=None,
        help="ROI models: the finding's box in the full mammogram's pixels",
    )
    p.add_argument(
        "--heatmap",
        metavar="DIR",
        default=None,
        help="write Grad-CAM overlays (PNG, over the tile the model saw) into this new folder",
    )
    p.add_argument(
        "--expect-sha256",
        metavar="HEX",
        default=None,
        help="an export bundle's SHA-256 as export printed it, from a place you trust: any "
        "other bundle is refused before it is loaded (a bundle is code)",
    )
    _max_pixels(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_predict)


def cmd_predict(args) -> None:
    import tuner

    result = tuner.predict(
        args.checkpoint,
        args.files,
        threshold=args.threshold,
        roi_mask=args.roi_mask,
        roi_box=args.roi_box,
        heatmap=args.heatmap,
        expect_sha256=args.expect_sha256,
        max_pixels=args.max_pixels,
    )
    _show(args, result, present.predictions)


def _report(commands) -> None:
    p = commands.add_parser(
        "report", help="a self-contained HTML report of an experiment, with a model card"
    )
    p.add_argument("experiment", help="the search's storage location (--storage)")
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="HTML file to write, new (default: EXP/reports/<UTC time>/report.html); "
        "model_card.json is written beside it",
    )
    p.add_argument(
        "--study",
        metavar="URL",
        default=None,
        help="the Optuna storage of a search run with --study (password in PGPASSWORD); "
        "default: only the copy the experiment holds (optuna.db)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_report)


def cmd_report(args) -> None:
    import tuner

    _show(args, tuner.report(args.experiment, out=args.out, study=args.study), present.report)


def _export(commands) -> None:
    p = commands.add_parser(
        "export", help="a model as an ONNX or TorchScript bundle with its preprocessing"
    )
    p.add_argument(
        "model",
        help="a checkpoint, a final model, a promotion (EXP/promotions/<id>), a trial "
        "folder, or an experiment (its promoted final model, else its best checkpoint)",
    )
    p.add_argument("out", help="the bundle folder or URL to create (must not exist)")
    p.add_argument(
        "--format", choices=("onnx", "torchscript"), default="onnx", help="default: onnx"
    )
    p.add_argument("--json", action="store_true", help="print JSON (bundle.json)")
    p.set_defaults(run=cmd_export)


def cmd_export(args) -> None:
    import tuner

    _show(args, tuner.export(args.model, args.out, format=args.format), present.bundle)


def _promote(commands) -> None:
    p = commands.add_parser(
        "promote",
        help="cross-validate the search's best by patient, pick one model, test it once",
    )
    p.add_argument("experiment", help="experiment folder or URL (the search's --storage)")
    p.add_argument("--data", default=None, help="prepared dataset (default: the search's)")
    p.add_argument("--top", type=int, default=3, help="candidates: the K best trials (3)")
    p.add_argument("--folds", type=int, default=5, help="patient-grouped folds (5)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per candidate and fold (2)")
    p.add_argument(
        "--final",
        default="folds",
        help="final model: the winner's fold models averaged, or a refit on train+val",
    )
    p.add_argument("--tta", action="store_true", help="average over flips inside the model")
    p.add_argument(
        "--target-recall", type=float, default=0.9, help="recall the OOF threshold reaches"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="trial settings for every candidate: epochs=2, batch_size=16",
    )
    p.add_argument("--id", default=None, help="name of the promotion (default p1, p2, ...)")
    p.add_argument("--seed", type=int, default=0, help="seeds folds, trials and bootstrap")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument(
        "--max-failures", type=int, default=1, help="retries of an errored trial (default 1)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with an interrupted promotion (--id, or the newest)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.add_argument(
        "--allow-mixed-editions",
        action="store_true",
        help="--data from the other CBIS-DDSM edition (DICOM/JPEG) than the search's",
    )
    p.add_argument("--json", action="store_true", help="print promotion.json")
    p.set_defaults(run=cmd_promote)


def cmd_promote(args) -> None:
    import tuner
    from tuner.config import parse_overrides

    experiment = tuner.Experiment.open(args.experiment)
    result = experiment.promote(
        data=args.data,
        top=args.top,
        folds=args.folds,
        seeds=args.seeds,
        final=args.final,
        tta=args.tta,
        target_recall=args.target_recall,
        overrides=parse_overrides(args.set or []),
        promotion_id=args.id,
        seed=args.seed,
        resamples=args.resamples,
        max_failures=args.max_failures,
        resume=args.resume,
        address=args.address,
        allow_mixed_editions=args.allow_mixed_editions,
        console=None if args.json else console,
        log=(errors if args.json else console).print,
    )
    _show(args, result, present.promotion)


def _status(commands) -> None:
    p = commands.add_parser(
        "status", help="trials finished/running/errored and the best so far (from storage)"
    )
    p.add_argument("experiment", help="experiment folder or URL (the search's --storage)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_status)


def cmd_status(args) -> None:
    import tuner

    _show(args, tuner.Experiment.open(args.experiment).status(), present.status)


def _best(commands) -> None:
    p = commands.add_parser("best", help="leaderboard (Pareto front), best config and checkpoint")
    p.add_argument("experiment", help="experiment folder or URL (the search's --storage)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--download",
        metavar="DIR",
        help="copy the promoted final model (if any), else the best checkpoint, into DIR (new)",
    )
    p.set_defaults(run=cmd_best)


def cmd_best(args) -> None:
    import tuner

    experiment = tuner.Experiment.open(args.experiment)
    _show(args, experiment.leaderboard(), present.leaderboard)
    if args.download:
        dest = experiment.download(args.download)
        what = "promoted final model" if experiment.promotion() else "best checkpoint"
        (errors if args.json else console).print(f"{what} downloaded to {dest}")


_COMMANDS = (
    _quickstart,
    _synth,
    _prepare,
    _search,
    _submit,
    _pretrain_mias,
    _weights,
    _evaluate,
    _predict,
    _export,
    _promote,
    _report,
    _status,
    _best,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammotune",
        description="Distributed hyperparameter search for mammography classifiers.",
    )
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint for s3:// URLs (sets AWS_ENDPOINT_URL for this run and "
        "the Ray workers it starts)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # importing tuner turned on Ray's token mode
    if args.endpoint_url:
        # Through the environment, so that Ray workers started by this run use it too.
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    try:
        code = args.run(args)
    except UserError as exc:
        errors.print(f"mammotune {args.command}: error: {exc}")
        return 2
    except PermissionError as exc:  # a refusal no storage helper named (a library's own read)
        reason = str(exc).splitlines()[0] if str(exc) else "permission denied"
        errors.print(
            f"mammotune {args.command}: error: access denied ({reason}); check the credentials "
            "(AWS_ACCESS_KEY_ID, AWS_PROFILE or the instance role) and the folder's permissions"
        )
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
