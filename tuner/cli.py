"""The ``mammotune`` command line: quickstart, synth, prepare, search, best.

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
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

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
    from tuner.cluster import connect
    from tuner.config import load_space
    from tuner.search.runner import plan_search, run_search

    space_file = resolve_space(args.space)
    plan = plan_search(
        load_space(space_file),
        space_file=str(space_file),
        data=args.data,
        experiment=args.storage,
        weights_dir=args.weights,
        trials=args.trials,
        study=args.study,
    )
    dashboard = connect(args.address)
    console.print(
        f"search {plan.space.name}: {plan.space.trials} trials, up to {plan.space.max_concurrent} "
        f"at a time, {plan.max_epochs} epochs max, ASHA on {plan.space.metric} ({plan.space.mode})"
    )
    console.print(f"experiment: {plan.experiment}; Optuna study: {plan.study_storage}")
    if dashboard:
        console.print(f"Ray dashboard: {dashboard}")
    run_search(plan)
    print_leaderboard(plan.experiment)


def print_leaderboard(experiment: str, *, as_json: bool = False) -> dict:
    from rich.table import Table

    from tuner.results.leaderboard import leaderboard

    board = leaderboard(experiment)
    if as_json:
        print(json.dumps(board, indent=2, default=str))
        return board
    metric = board["metric"]
    table = Table(
        "#",
        "trial",
        "status",
        "epochs",
        *board["dimensions"],
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
            *(_short(trial["config"].get(d)) for d in board["dimensions"]),
            _short(best.get(metric)),
            _short(best.get("val_accuracy")),
            _short(best.get("val_recall")),
            _short(best.get("val_specificity")),
        )
    console.print(table)
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
    print_leaderboard(args.experiment, as_json=args.json)


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
    p.add_argument("--space", required=True, help="space file or preset name (quick, ...)")
    p.add_argument("--data", required=True, help="prepared dataset folder or URL")
    p.add_argument("--storage", required=True, help="experiment folder or URL (new)")
    p.add_argument("--trials", type=int, default=None, help="override the space's trial count")
    p.add_argument("--weights", default=None, help="folder/URL with torchvision ImageNet files")
    p.add_argument("--study", default=None, help="Optuna storage URL (default: SQLite)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.set_defaults(run=cmd_search)

    p = commands.add_parser("best", help="leaderboard, best config and checkpoint")
    p.add_argument("experiment", help="experiment folder or URL (the search's --storage)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_best)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.endpoint_url:
        # Through the environment, so that Ray workers started by this run use it too.
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    try:
        args.run(args)
    except UserError as exc:
        errors.print(f"mammotune {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
