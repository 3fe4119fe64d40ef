"""The ``mammotune`` command line: quickstart, synth, prepare, pretrain-mias, weights fetch,
search, submit, status, best, evaluate, predict.

User mistakes print one line naming the problem and the fix and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console

from tuner.errors import UserError

# Piped or logged output (CI, files) gets room for the leaderboard instead of rich's 80 columns.
# markup=False: user text (paths, --set values such as backbone=[vgg19]) prints as given.
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

PRESETS = Path(__file__).resolve().parent.parent / "search_spaces"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of sizes"
        ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def resolve_space(value: str) -> Path:
    """A space file path, or the name of a preset in search_spaces/ ("quick")."""
    path = Path(value)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    preset = PRESETS / f"{value}.yaml"
    if preset.is_file():
        return preset
    names = sorted(p.stem for p in PRESETS.glob("*.yaml")) if PRESETS.is_dir() else []
    from tuner.errors import unknown_choice

    raise UserError(unknown_choice("search space", value, names + ["<path to a .yaml file>"]))


def cmd_synth(args) -> None:
    from rich.progress import Progress

    from tuner.data.synthetic import SynthParams, synthesize

    params = SynthParams(
        patients=args.patients,
        seed=args.seed,
        difficulty=args.difficulty,
        scale=args.scale,
        format=args.format,
        layout=args.layout,
    )
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rendering images", total=None)
        summary = synthesize(
            args.out,
            params,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    verb = (
        "already there (same settings), nothing written"
        if summary.get("reused")
        else f"written in {summary['seconds']}s"
    )
    console.print(
        f"synthetic {args.format} at {args.out}: {summary['patients']} patients, "
        f"{summary['images']} images, {summary['abnormalities']} abnormalities "
        f"({summary['malignant']} malignant); {verb}"
    )


def cmd_prepare(args) -> None:
    from tuner.cluster import connect
    from tuner.data.prepare import PrepareParams, plan_prepare, run_prepare

    params = PrepareParams(
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
    )
    plan = plan_prepare(args.source, args.out, params, kind=args.source_kind)  # before Ray
    if plan.existing is None:
        images = sum(len(c["images"]) for c in plan.chunks)
        console.print(
            f"{plan.kind} at {plan.source}: {images} images in {len(plan.chunks)} chunks -> "
            f"{plan.out}" + (f" ({len(plan.skipped)} inputs skipped)" if plan.skipped else "")
        )
        connect(args.address)
    print_manifest(run_prepare(plan), args.out)


def print_manifest(manifest: dict, out: str) -> None:
    from rich.table import Table

    if manifest.get("reused"):
        console.print(f"{out} already holds this dataset (id {manifest['id']}); nothing to do")
    else:
        console.print(f"prepared dataset {manifest['id']} at {out} in {manifest['seconds']}s")
    table = Table("tiles", "split", "rows", "pathology", "lesion / tissue", "patients")
    for key, kind in manifest["tiles"].items():
        for split, entry in kind["splits"].items():
            counts = ", ".join(f"{k.lower()} {v}" for k, v in entry["pathology"].items())
            lesions = f"{entry['lesion'].get('lesion', 0)} / {entry['lesion'].get('tissue', 0)}"
            patients = str(manifest["splits"][split]["patients"])
            table.add_row(key, split, str(entry["rows"]), counts, lesions, patients)
    console.print(table)
    leak = manifest["leakage"]
    console.print(
        f"patients in official train and test: {leak['patients_in_official_train_and_test']} "
        f"(resolved: {leak['rule']}); in two splits now: {leak['patients_in_two_splits']}"
    )
    if manifest["skipped"]:
        console.print(
            f"skipped inputs: {len(manifest['skipped'])} (reasons in manifest.json), e.g.:"
        )
        for item in manifest["skipped"][:5]:
            console.print(f"  {item['item']}: {item['reason']}", soft_wrap=True)


def cmd_search(args) -> None:
    from tuner.cluster import check_gpus, connect
    from tuner.config import apply_overrides, load_space
    from tuner.search.runner import check_resumable, plan_search, resume_search, run_search

    if args.resume:
        given = [f"--{n}" for n in ("space", "data", "storage") if getattr(args, n) is not None]
        if given:
            raise UserError(
                f"--resume continues the search as it was started; drop {', '.join(given)}"
            )
        meta = check_resumable(args.resume)  # before starting or joining a cluster
        dashboard = connect(args.address)
        check_gpus(meta["space"]["resources"]["gpu"], args.address)
        console.print(f"resuming the search at {args.resume}")
        if dashboard:
            console.print(f"Ray dashboard: {dashboard}")
        resume_search(args.resume)
        print_leaderboard(args.resume)
        return
    missing = [f"--{n}" for n in ("space", "data", "storage") if getattr(args, n) is None]
    if missing:
        raise UserError(f"search needs {', '.join(missing)} (or --resume EXPERIMENT)")
    space_file = resolve_space(args.space)
    space = load_space(space_file)
    source = str(space_file)
    if args.set:
        space = apply_overrides(space, args.set, source)
        source = f"{source} with --set {' '.join(args.set)}"
    plan = plan_search(
        space,
        space_file=source,
        data=args.data,
        experiment=args.storage,
        weights_dir=args.weights,
        trials=args.trials,
        study=args.study,
        cpus=args.cpus_per_trial,
        gpus=args.gpus_per_trial,
    )
    dashboard = connect(args.address)
    check_gpus(plan.space.resources.gpu, args.address or os.environ.get("RAY_ADDRESS"))
    console.print(
        f"search {plan.space.name}: {plan.space.trials} trials, up to {plan.space.max_concurrent} "
        f"at a time, {plan.max_epochs} epochs max, ASHA on {plan.space.metric} ({plan.space.mode})"
    )
    console.print(f"experiment: {plan.experiment}; Optuna study: {plan.study_storage}")
    if dashboard:
        console.print(f"Ray dashboard: {dashboard}")
    run_search(
        plan, max_failures=args.max_failures, reuse_actors=args.reuse_actors, console=console
    )
    print_leaderboard(plan.experiment)


def cmd_submit(args) -> int:
    from tuner.jobs import check_env, follow, submit

    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise UserError(
            "submit needs --address http://HEAD:8265 (the Ray dashboard's Jobs API) or "
            "RAY_API_SERVER_ADDRESS"
        )
    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    env = check_env(args.env or [])
    client, job_id = submit(
        address, command, working_dir=args.working_dir, env=env, submission_id=args.job_id
    )
    console.print(f"submitted job {job_id} to {address}: mammotune {' '.join(command)}")
    console.print(f"  dashboard: {address.rstrip('/')}/#/jobs/{job_id}", soft_wrap=True)
    if args.no_wait:
        console.print(f"  follow it with: ray job logs --address {address} --follow {job_id}")
        return 0
    try:
        status = follow(client, job_id, lambda text: console.print(text, soft_wrap=True))
    except KeyboardInterrupt:
        errors.print(
            f"stopped following; job {job_id} goes on (ray job logs --address {address} "
            f"--follow {job_id}; ray job stop ... {job_id} to stop it)"
        )
        return 130
    console.print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_pretrain_mias(args) -> None:
    from tuner.training.pretrain import PretrainParams, pretrain_mias

    params = PretrainParams(
        view=args.view,
        size=args.size,
        enhance=args.enhance,
        head_epochs=args.head_epochs,
        all_epochs=args.all_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    results = pretrain_mias(
        args.data, args.weights, list(args.backbones), params, progress=console.print
    )
    for backbone, stages in results.items():
        summary = ", ".join(f"{s} val AUC {m['val_roc_auc']:.3f}" for s, m in stages.items())
        console.print(f"{backbone}: {summary}")


def cmd_weights_fetch(args) -> None:
    from tuner.models.backbones import get_spec, list_backbones
    from tuner.models.weights import fetch_imagenet

    names = list(args.backbones) or [n for n in list_backbones() if get_spec(n).published]
    for url, what in fetch_imagenet(args.dest, names, base_url=args.base_url):
        console.print(f"{url}: {what}")


def print_leaderboard(experiment: str, *, as_json: bool = False) -> dict:
    from rich.table import Table

    from tuner.results.leaderboard import PRODUCT_DIMENSIONS as PRODUCT_COLUMNS
    from tuner.results.leaderboard import leaderboard

    board = leaderboard(experiment)
    if as_json:
        print(json.dumps(board, indent=2, default=str))
        return board
    metric = board["metric"]
    # The five published dimensions (and enhancement) as columns; any other searched
    # setting is in the best config below and in --json.
    columns = [d for d in board["dimensions"] if d in (*PRODUCT_COLUMNS, "enhance")]
    table = Table(
        "#",
        "trial",
        "status",
        "epochs",
        *columns,
        metric,
        "accuracy",
        "recall",
        "specificity",
        title=f"{board['experiment']}: best epoch of each trial",
    )
    for rank, trial in enumerate(board["trials"], 1):
        best = trial["best"]
        table.add_row(
            str(rank),
            trial["trial_id"],
            trial["status"],
            str(trial["epochs"]),
            *(_short(trial["config"].get(d)) for d in columns),
            _short(best.get(metric)),
            _short(best.get("val_accuracy")),
            _short(best.get("val_recall")),
            _short(best.get("val_specificity")),
        )
    console.print(table)
    for trial in board["trials"]:
        if trial.get("error"):
            console.print(f"trial {trial['trial_id']} errored: {trial['error']}", soft_wrap=True)
    best = board["best"]
    if best is None:
        console.print("no trial has a checkpoint yet")
    else:
        console.print(f"best trial {best['trial_id']}: {metric} {_short(best['best'].get(metric))}")
        console.print(f"  config: {json.dumps(best['config'])}", soft_wrap=True)
        console.print(f"  checkpoint: {best['checkpoint']}", soft_wrap=True)
    return board


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.3f}"
    return "-" if value is None else str(value)


def cmd_best(args) -> None:
    from tuner.results.leaderboard import download_checkpoint

    board = print_leaderboard(args.experiment, as_json=args.json)
    if args.download:
        if board["best"] is None:
            raise UserError(f"{args.experiment}: no trial has a checkpoint to download yet")
        dest = download_checkpoint(board["best"]["checkpoint"], args.download)
        (errors if args.json else console).print(f"best checkpoint downloaded to {dest}")


def cmd_status(args) -> None:
    from collections import Counter

    from tuner.results.leaderboard import leaderboard

    board = leaderboard(args.experiment)
    trials = board["trials"]
    counts = Counter(t["status"] for t in trials)
    summary = {
        "experiment": board["experiment"],
        "planned_trials": board["planned_trials"],
        "started_trials": len(trials),
        "finished": counts["done"] + counts["stopped"],
        "running": counts["running"] + counts["pending"] + counts["paused"],
        "errored": counts["error"],
        "by_status": dict(counts),
        "failures": sum(t["failures"] for t in trials),  # failed attempts, retried or not
        "metric": board["metric"],
        "best": None,
    }
    if board["best"] is not None:
        best = board["best"]
        summary["best"] = {
            "trial_id": best["trial_id"],
            "value": best["best"].get(board["metric"]),
            "epoch": best["best"].get("epoch"),
            "config": best["config"],
            "checkpoint": best["checkpoint"],
        }
    summary["errors"] = {t["trial_id"]: t["error"] for t in trials if t["error"]}
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return
    console.print(
        f"{summary['experiment']}: {summary['started_trials']} of {summary['planned_trials']} "
        f"trials started; {summary['finished']} finished, {summary['running']} running, "
        f"{summary['errored']} errored; {summary['failures']} failed attempts (a trial is "
        "retried from its last checkpoint up to --max-failures times)"
    )
    if summary["best"]:
        best = summary["best"]
        console.print(
            f"best so far: {board['metric']} {_short(best['value'])} (trial {best['trial_id']}, "
            f"epoch {best['epoch']}) {json.dumps(best['config'])}",
            soft_wrap=True,
        )
    else:
        console.print("no trial has a checkpoint yet")
    for trial_id, error in summary["errors"].items():
        console.print(f"trial {trial_id} errored: {error}", soft_wrap=True)


def _checkpoints(target: str, top: int) -> list[str]:
    """A checkpoint folder as is; an experiment's ``top`` best checkpoints."""
    from tuner import storage
    from tuner.results.leaderboard import leaderboard
    from tuner.search.experiment import EXPERIMENT_FILE
    from tuner.training.checkpoint import META

    if storage.exists(storage.join(target, META)):
        if top != 1:
            raise UserError("--ensemble takes the best checkpoints of an experiment, not one")
        return [target]
    if not storage.exists(storage.join(target, EXPERIMENT_FILE)):
        raise UserError(f"{target} is neither a checkpoint ({META}) nor an experiment")
    ranked = [t["checkpoint"] for t in leaderboard(target)["trials"] if t["checkpoint"]]
    if not ranked:
        raise UserError(f"{target}: no trial has a checkpoint yet")
    return ranked[:top]


def cmd_evaluate(args) -> None:
    from rich.table import Table

    from tuner.results.evaluate import evaluate, write_report

    if args.ensemble < 1 or not 0 < args.target_recall <= 1:
        raise UserError("--ensemble must be >= 1 and --target-recall in (0, 1]")
    if args.report:
        import os

        if os.path.isdir(args.report) and os.listdir(args.report):
            raise UserError(f"{args.report} is not empty; choose a new folder for --report")
    checkpoints = _checkpoints(args.target, args.ensemble)
    report = evaluate(
        checkpoints,
        args.data,
        split=args.split,
        target_recall=args.target_recall,
        resamples=args.resamples,
    )
    written = write_report(report, args.report) if args.report else []
    if args.json:
        from tuner.results.evaluate import json_safe

        plain = {k: v for k, v in report.items() if not k.startswith("_")}
        print(json.dumps(json_safe(plain), indent=2))
        return
    kind = f"ensemble of {len(checkpoints)}" if len(checkpoints) > 1 else "checkpoint"
    console.print(f"{kind} on {report['split']} of {report['data']}: {report['rows']} rows")
    for level in ("per_image", "per_breast"):
        if level not in report:
            continue
        entry = report[level]
        table = Table("metric", "value", "95% CI", title=f"{level} ({entry['rows']} rows)")
        for name, value in entry["metrics"].items():
            low, high = entry["intervals_95"][name]
            table.add_row(name, _short(value), f"{_short(low)} - {_short(high)}")
        console.print(table)
        if "target_recall" in entry:
            t = entry["target_recall"]
            console.print(
                f"threshold {t['threshold']:.3f} reaches recall {t['recall']:.3f} "
                f"(goal {t['recall_goal']}): precision {t['precision']:.3f}, "
                f"specificity {t['specificity']:.3f}"
            )
    for path in written:
        console.print(f"wrote {path}", soft_wrap=True)


def cmd_predict(args) -> None:
    from tuner.results.predict import predict_files

    result = predict_files(args.checkpoint, args.files, threshold=args.threshold)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for item in result["predictions"]:
        probabilities = ", ".join(f"{c} {p:.3f}" for c, p in item["probabilities"].items())
        console.print(f"{item['file']}: {item['predicted']} ({probabilities})", soft_wrap=True)


def cmd_quickstart(args) -> None:
    from tuner.quickstart import run_quickstart

    run_quickstart(args.workdir, patients=args.patients, trials=args.trials, console=console)


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

    p = commands.add_parser("quickstart", help="synth -> prepare -> search -> best, on a CPU")
    p.add_argument("--workdir", default="mammotune-quickstart", help="where everything goes")
    p.add_argument("--patients", type=int, default=240, help="synthetic patients")
    p.add_argument("--trials", type=int, default=None, help="override the preset's trials")
    p.set_defaults(run=cmd_quickstart)

    p = commands.add_parser("synth", help="write a synthetic CBIS-DDSM or mini-MIAS dataset")
    p.add_argument("out", help="output folder or URL")
    p.add_argument("--format", default="cbis-ddsm", help="cbis-ddsm or mini-mias")
    p.add_argument(
        "--layout",
        default="csv",
        help="CBIS-DDSM files: csv (the CSVs' paths) or archive (a download)",
    )
    p.add_argument(
        "--patients", type=int, default=200, help="patients (mini-MIAS: women, 2 images each)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=0.5, help="0 (obvious) to 1 (subtle)")
    p.add_argument(
        "--scale", type=float, default=0.25, help="CBIS-DDSM: fraction of real resolution"
    )
    p.set_defaults(run=cmd_synth)

    p = commands.add_parser(
        "prepare", help="a CBIS-DDSM or mini-MIAS folder -> tile shards + manifest.json"
    )
    p.add_argument(
        "source", help="folder or URL: CBIS-DDSM (CSVs + DICOM tree) or mini-MIAS (Info.txt + PGMs)"
    )
    p.add_argument("out", help="dataset folder or URL (a local path, file://, s3://, memory://)")
    p.add_argument(
        "--source-kind",
        default=None,
        help="cbis-ddsm or mini-mias (default: recognised from the files)",
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
    p.set_defaults(run=cmd_prepare)

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
        help="override the space: epochs=2, backbone=[vgg19,resnet50], resources.gpu=0.5",
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
        "--study", default=None, help="Optuna storage: SQLAlchemy URL (default: SQLite file)"
    )
    p.add_argument(
        "--max-failures", type=int, default=1, help="retries of an errored trial (default 1)"
    )
    p.add_argument(
        "--reuse-actors",
        action="store_true",
        help="recycle trial processes: quicker trial starts (short CPU trials)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.set_defaults(run=cmd_search)

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
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("predict", help="class probabilities for DICOM or PNG files")
    p.add_argument("checkpoint", help="checkpoint folder or URL")
    p.add_argument("files", nargs="+", help="DICOM, PNG, PGM, JPEG or TIFF files")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="positive-class threshold (two classes)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_predict)

    p = commands.add_parser(
        "status", help="trials finished/running/errored and the best so far (from storage)"
    )
    p.add_argument("experiment", help="experiment folder or URL (the search's --storage)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_status)

    p = commands.add_parser("best", help="leaderboard, best config and checkpoint")
    p.add_argument("experiment", help="experiment folder or URL (the search's --storage)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--download", metavar="DIR", help="copy the best checkpoint into DIR (new)")
    p.set_defaults(run=cmd_best)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tuner.cluster import use_given_token

    use_given_token()  # before anything imports ray
    if args.endpoint_url:
        # Through the environment, so that Ray workers started by this run use it too.
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    try:
        code = args.run(args)
    except UserError as exc:
        errors.print(f"mammotune {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
