"""``mammotune report``: one self-contained HTML file about an experiment, for a ticket or a
paper: the search (trials, compute, learning curves, hyperparameter importance, the
leaderboard), the data, the promotion and a model card; ``model_card.json`` beside it.

Every figure is a PNG data URI and the styles are inline: the file makes no request when
opened, works offline and can be mailed. Read from storage alone (no cluster); a part that
cannot be read (a study whose database is elsewhere, a dataset not at hand) says why in
its place instead of failing the report.
"""

from __future__ import annotations

import base64
import calendar
import html
import io
import json
import logging
import os
import sqlite3
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tuner import __version__, storage
from tuner.errors import UserError

__all__ = ["Report", "search_report", "compute_ledger"]

logger = logging.getLogger("tuner")
CARD_FILE = "model_card.json"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:0 24px 48px;color:#1d232a}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;border-bottom:2px solid #d6dde5;
padding-bottom:4px;margin-top:36px}h3{font-size:15px;margin:22px 0 6px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid #d6dde5;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f4f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#5a6672}.warn{background:#fff4e0;border-left:4px solid #e0a030;padding:6px 10px}
.muted{color:#8a949e}img{max-width:100%;height:auto;border:1px solid #eef1f4}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0}
figcaption{font-size:12px;color:#5a6672}pre{background:#f6f8fa;padding:8px;overflow:auto}
nav a{margin-right:14px}dl{margin:0}dt{font-weight:600;margin-top:6px}dd{margin-left:16px}
"""


@dataclass
class Report:
    """What :func:`search_report` wrote: the HTML file, the model card and what is in them."""

    path: str
    model_card: str | None
    sections: list[str]
    trials: int
    figures: int
    notes: list[str] = field(default_factory=list)  # parts left out, and why
    compute: dict = field(default_factory=dict, repr=False)  # see :func:`compute_ledger`

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- HTML helpers
def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Learning rates and the like: significant digits, not decimals.
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.{digits}f}"
    return _e(value)


def _ci(values) -> str:
    if not values or values[0] is None:
        return "-"
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


def _table(headers: list[str], rows: list[list], *, id_: str | None = None, row_ids=None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="n">{_num(c)}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{c if isinstance(c, _Raw) else _num(c)}</td>"
            for c in row
        )
        attr = f' data-row="{_e(row_ids[i])}"' if row_ids else ""
        body.append(f"<tr{attr}>{cells}</tr>")
    ident = f' id="{id_}"' if id_ else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Trusted HTML inside a table cell."""


def _with_ci(level: dict, metric: str) -> _Raw:
    interval = _ci(level["intervals_95"].get(metric))
    return _Raw(f"{_num(level['metrics'].get(metric))} <span class='muted'>{interval}</span>")


def _kv(rows: list[list]) -> str:
    """A two-column table of names and values, without a header."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_num(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _figure(fig, caption: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------- reading
def _trials(experiment: str):
    """(leaderboard, {trial id: reported rows}) from storage."""
    from tuner.results.leaderboard import leaderboard
    from tuner.search.experiment import trial_results

    board = leaderboard(experiment)
    fs, path = storage.filesystem(experiment)
    rows = {t.trial_id: trial_results(fs, f"{path}/trial_{t.trial_id}") for t in board.trials}
    return board, rows


def compute_ledger(board, rows: dict, resources: dict, first: int) -> dict:
    """CPU- and GPU-hours per trial (its resources x its reported time), the total, and the
    hours spent per 0.01 of the metric gained after the ``first`` trials (by start time).

    Returns:
        ``{"trials": [{trial_id, seconds, cpu_hours, gpu_hours}], "cpu_hours",
        "gpu_hours", "first", "best_of_first", "best", "gain", "hours_after_first",
        "hours_per_0.01"}`` (the last None when nothing was gained).
    """
    cpu, gpu = float(resources.get("cpu", 1)), float(resources.get("gpu", 0))
    sign = 1 if board.mode == "max" else -1
    entries = []
    for trial in board.trials:
        reported = rows.get(trial.trial_id) or []
        seconds = float(reported[-1].get("time_total_s", 0.0)) if reported else 0.0
        start = (
            float(reported[0].get("timestamp", 0)) - float(reported[0].get("time_this_iter_s", 0))
            if reported
            else float("inf")
        )
        values = [r[board.metric] for r in reported if r.get(board.metric) is not None]
        best = max(values, key=lambda v: sign * v) if values else None
        entries.append(
            {
                "trial_id": trial.trial_id,
                "start": start,
                "seconds": seconds,
                "cpu_hours": seconds * cpu / 3600,
                "gpu_hours": seconds * gpu / 3600,
                "best": best,
            }
        )
    entries.sort(key=lambda e: e["start"])
    head, tail = entries[:first], entries[first:]

    def best_of(items):
        values = [e["best"] for e in items if e["best"] is not None]
        return max(values, key=lambda v: sign * v) if values else None

    best_first, best = best_of(head), best_of(entries)
    gain = sign * (best - best_first) if best is not None and best_first is not None else None
    hours_after = sum(e["cpu_hours"] if not gpu else e["gpu_hours"] for e in tail)
    return {
        "trials": [{k: v for k, v in e.items() if k != "start"} for e in entries],
        "cpu_hours": sum(e["cpu_hours"] for e in entries),
        "gpu_hours": sum(e["gpu_hours"] for e in entries),
        "unit": "GPU-hours" if gpu else "CPU-hours",
        "first": first,  # as asked: the startup phase may be longer than the search
        "best_of_first": best_first,
        "best": best,
        "gain": gain,
        "hours_after_first": hours_after,
        "hours_per_0.01": hours_after / (gain / 0.01) if gain and gain > 0 else None,
    }


# Optuna's own defaults for the samplers that start with independent draws.
_STARTUP_DEFAULTS = {"tpe": 10, "gp": 10}


def _first(space: dict) -> int:
    """How many trials the sampler drew before learning from any (its startup trials; for
    samplers without that phase, the first batch run at once)."""
    sampler = space.get("sampler") or {}
    startup = sampler.get("n_startup_trials")
    if startup is None:
        startup = _STARTUP_DEFAULTS.get(sampler.get("type"))
    if startup is None or startup < 1:
        startup = space.get("max_concurrent") or 1
    return int(startup)


def _study(meta: dict, experiment: str, named: str | None = None):
    """The search's Optuna study, or (None, why not).

    Read from the database the user names (``named``), else from the copy the experiment
    holds (``EXP/optuna.db``: a local experiment's study, a bucket experiment's snapshot).
    The URL ``search.json`` records is never connected to on its own: an edited file must
    not send this machine's PGPASSWORD to a server of its choosing.
    """
    import optuna

    from tuner.search.study import SNAPSHOT_FILE, redact

    study = meta.get("study") or {}
    recorded = str(study.get("storage") or "")
    name = study.get("name")
    own = storage.join(experiment, SNAPSHOT_FILE)
    reason = (
        f"the experiment holds no copy of it ({SNAPSHOT_FILE}); the search kept it in "
        f"{redact(recorded)}, which is read only when named: report --study URL (study= in "
        "Python)"
        if recorded
        else f"the experiment holds no copy of it ({SNAPSHOT_FILE})"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if named:
        try:
            return optuna.load_study(study_name=name, storage=named), None
        except Exception as exc:  # a database we cannot open: say so in the report
            return None, f"{redact(named)}: {type(exc).__name__}: {_first_line(exc, named)}"
    try:
        if not storage.exists(own):
            return None, reason
    except UserError as exc:
        return None, str(exc)
    with tempfile.TemporaryDirectory(prefix="mammotune-study-") as folder:
        local = os.path.join(folder, SNAPSHOT_FILE)
        try:
            if not storage.is_local(experiment):  # a bucket experiment's snapshot: a copy
                fs, path = storage.filesystem(own)
                fs.get(path, local)
            else:  # opened read-only and copied consistently (a search may be writing it)
                source = Path(own).resolve().as_uri() + "?mode=ro"
                with (
                    closing(sqlite3.connect(source, uri=True)) as src,
                    closing(sqlite3.connect(local)) as dst,
                ):
                    src.backup(dst)
            url = f"sqlite:///{local}"
            # The copy's folder goes when this returns: the study is read into memory.
            memory = optuna.storages.InMemoryStorage()
            optuna.copy_study(from_study_name=name, from_storage=url, to_storage=memory)
            return optuna.load_study(study_name=name, storage=memory), None
        except Exception as exc:
            return None, f"{SNAPSHOT_FILE}: {type(exc).__name__}: {_first_line(exc, None)}"


def _first_line(exc: Exception, url: str | None) -> str:
    from tuner.search.study import secrets_in

    text = (str(exc).splitlines() or [""])[0][:160]
    for secret in secrets_in(url) if url else []:
        text = text.replace(secret, "***")
    return text


# ------------------------------------------------------------------------------ sections
def _search_section(meta, board, rows, ledger, figures: list[int]) -> str:
    plt = _pyplot()
    states = Counter(t.status for t in board.trials)
    created = meta.get("created", "")
    stamps = [r[-1].get("timestamp") for r in rows.values() if r and r[-1].get("timestamp")]
    wall = None
    if stamps and created:
        start = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))  # UTC
        wall = max(stamps) - start
    parts = ["<h2 id='search'>Search</h2>"]
    space = meta["space"]
    parts.append(
        f"<p>{len(board.trials)} trials of {_e(board.planned_trials or '?')} planned; metric "
        f"<b>{_e(board.metric)}</b> ({_e(board.mode)}); sampler "
        f"{_e(space.get('sampler', {}).get('type'))}, scheduler "
        f"{_e(space.get('scheduler', {}).get('type'))}; task {_e(space.get('task'))}, view "
        f"{_e(space.get('view'))}. Wall time "
        f"{'-' if wall is None else f'{wall / 60:.1f} min'} (search start to last report).</p>"
    )
    parts.append("<h3>Trials by state</h3>")
    parts.append(_table(["state", "trials"], [[s, n] for s, n in sorted(states.items())]))
    unit = ledger["unit"]
    parts.append("<h3>Compute ledger</h3>")
    per = ledger["hours_per_0.01"]
    total = (
        f"Total {ledger['cpu_hours']:.3f} CPU-hours, {ledger['gpu_hours']:.3f} GPU-hours "
        "(each trial's resources x its training time). "
    )
    spent = f"{ledger['hours_after_first']:.3f} {unit} spent after them"
    if len(ledger["trials"]) <= ledger["first"]:
        gained = (
            f"All {len(ledger['trials'])} trials were drawn in the sampler's startup phase "
            f"({ledger['first']} trials, before it learns from any): no cost per gain yet."
        )
    else:
        gained = (
            f"The first {ledger['first']} trials (drawn before the sampler learnt from any) "
            f"reached {_num(ledger['best_of_first'])}; the search ended at "
            f"{_num(ledger['best'])}: "
            + (
                f"<b>{per:.3f} {unit} per 0.01 {_e(board.metric)} gained</b> ({spent})."
                if per is not None
                else f"nothing gained after them ({spent})."
            )
        )
    parts.append(f"<p>{total}{gained}</p>")
    parts.append(
        _table(
            ["trial", "seconds", "CPU-hours", "GPU-hours", f"best {board.metric}"],
            [
                [e["trial_id"], e["seconds"], e["cpu_hours"], e["gpu_hours"], e["best"]]
                for e in ledger["trials"]
            ],
        )
    )
    # Learning curves, early stops marked.
    figs = []
    fig, axis = plt.subplots(figsize=(6.4, 3.8))
    drawn = 0
    for trial in board.trials:
        reported = [r for r in rows.get(trial.trial_id) or [] if r.get(board.metric) is not None]
        if not reported:
            continue
        x = [r.get("epoch", r.get("training_iteration")) for r in reported]
        y = [r[board.metric] for r in reported]
        (line,) = axis.plot(x, y, marker=".", lw=1.2, label=trial.trial_id)
        drawn += 1
        if trial.status == "stopped":
            axis.plot(x[-1], y[-1], "x", color="black", ms=9, mew=2)
        elif trial.status == "errored":
            axis.plot(x[-1], y[-1], "o", color="red", ms=8, mfc="none", mew=2)
    if drawn:
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_xlabel("epoch")
        axis.set_ylabel(board.metric)
        axis.set_title("learning curves (x: stopped early by the scheduler; o: errored)")
        if drawn <= 12:
            axis.legend(fontsize=7, ncol=2)
        figs.append(_figure(fig, "Validation metric per epoch, every trial"))
    else:
        plt.close(fig)
        figs.append("<p class='note'>No trial has reported an epoch yet.</p>")
    parts.append("<h3>Learning curves</h3><div class='figs'>" + "".join(figs) + "</div>")
    figures[0] += drawn > 0
    return "".join(parts)


def _importance_section(
    meta, experiment, board, figures: list[int], notes: list[str], named: str | None
) -> str:
    import optuna

    parts = ["<h3>Hyperparameter importance</h3>"]
    study, why = _study(meta, experiment, named)
    if study is None:
        notes.append(f"importance: the Optuna study could not be opened ({why})")
        return (
            "".join(parts) + f"<p class='note'>The Optuna study could not be opened: {_e(why)}.</p>"
        )
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    varying = {k for t in done for k in t.params if len({str(u.params.get(k)) for u in done}) > 1}
    if len(done) < 3 or not varying:
        text = (
            f"{len(done)} completed trial(s) in the study and {len(varying)} varying "
            "parameter(s): importance needs at least 3 completed trials of a varied space."
        )
        notes.append(f"importance: {text}")
        return "".join(parts) + f"<p class='note'>{_e(text)}</p>"
    plt = _pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for its matplotlib plots
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            importance = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=target
            )
        except Exception as exc:  # Optuna refuses some studies; the rest of the report stands
            text = f"Optuna could not compute importance: {str(exc).splitlines()[0][:200]}"
            notes.append(f"importance: {text}")
            return "".join(parts) + f"<p class='note'>{_e(text)}</p>"
        figs = []
        fig, axis = plt.subplots(figsize=(5.2, 0.5 + 0.35 * len(importance)))
        names = list(importance)[::-1]
        axis.barh(names, [importance[n] for n in names], color="#3b78b5")
        axis.set_xlabel("fANOVA importance (share of variance)")
        figs.append(_figure(fig, "Hyperparameter importance (Optuna fANOVA)"))
        for plot, caption in (
            (
                optuna.visualization.matplotlib.plot_slice,
                "Slice plot: metric against each parameter",
            ),
            (
                optuna.visualization.matplotlib.plot_parallel_coordinate,
                "Parallel coordinates: every completed trial",
            ),
        ):
            try:
                axes = plot(study, target=target, target_name=board.metric)
                figs.append(_figure(np.atleast_1d(axes).flat[0].figure, caption))
            except Exception as exc:  # Optuna refuses some spaces (e.g. one parameter)
                notes.append(f"{caption.split(':')[0]}: {exc}")
    figures[0] += len(figs)
    rows = [[name, value] for name, value in importance.items()]
    return (
        "".join(parts)
        + f"<p>From {len(done)} completed trials of study <code>{_e(study.study_name)}</code>"
        + (" (first objective)" if multi else "")
        + ".</p>"
        + _table(["parameter", "importance"], rows)
        + "<div class='figs'>"
        + "".join(figs)
        + "</div>"
    )


def _leaderboard_section(board) -> str:
    dims = [d for d in board.dimensions if d not in ("task", "view")]
    rows, ids = [], []
    for rank, trial in enumerate(board.trials, 1):
        rows.append(
            [
                rank,
                trial.trial_id,
                trial.status,
                trial.epochs,
                trial.value,
                *[
                    trial.config.get(d)
                    if isinstance(trial.config.get(d), int | float)
                    else str(trial.config.get(d))
                    for d in dims
                ],
                "yes" if trial.checkpoint else "no",
            ]
        )
        ids.append(trial.trial_id)
    if not rows:
        return "<h3>Leaderboard</h3><p class='note'>No trial yet.</p>"
    best = board.best
    best_html = (
        f"<h3>Best configuration</h3><p>Trial {_e(best.trial_id)}, {_e(board.metric)} "
        f"{_num(best.value)} at epoch {_e(best.metrics.get('epoch'))}.</p><pre>"
        f"{_e(json.dumps(best.config, indent=2, sort_keys=True, default=str))}</pre>"
        if best
        else "<h3>Best configuration</h3><p class='note'>No trial has a checkpoint yet.</p>"
    )
    return (
        "<h3>Leaderboard</h3>"
        + _table(
            ["#", "trial", "status", "epochs", board.metric, *dims, "checkpoint"],
            rows,
            id_="leaderboard",
            row_ids=ids,
        )
        + best_html
    )


def _data_section(meta: dict, experiment: str, notes: list[str]) -> str:
    parts = ["<h2 id='data'>Data</h2>"]
    from tuner.results.model_card import read_dataset

    url = meta.get("data")
    manifest, synthetic = read_dataset(url, experiment)
    if manifest is None:
        notes.append(f"data: the dataset {url} is not reachable (no manifest.json)")
        return (
            "".join(parts)
            + f"<p class='note'>The dataset {_e(url)} is not reachable from here.</p>"
        )
    source = manifest.get("source", {})
    parts.append(
        _kv(
            [
                ["dataset", url],
                ["dataset id", manifest.get("id")],
                ["params hash", manifest.get("params_hash")],
                [
                    "source",
                    f"{source.get('kind')} at {source.get('url')}"
                    + (" (SYNTHETIC phantoms)" if synthetic else ""),
                ],
                [
                    "prepared",
                    f"{manifest.get('created')} by mammotune {manifest.get('mammotune_version')}",
                ],
                [
                    "patients per split",
                    ", ".join(
                        f"{k} {v.get('patients')}" for k, v in manifest.get("splits", {}).items()
                    ),
                ],
            ],
        )
    )
    view = meta["space"].get("view")
    layouts = [(k, v) for k, v in manifest.get("tiles", {}).items() if v.get("view") == view]
    if layouts:
        name, layout = layouts[0]
        splits = list(layout.get("splits", {}))
        counts: dict = defaultdict(dict)
        for split, entry in layout["splits"].items():
            for c in entry.get("counts", []):
                key = (c.get("pathology"), c.get("abnormality_type"), c.get("lesion"))
                counts[key][split] = counts[key].get(split, 0) + int(c["rows"])
        parts.append(f"<h3>Rows per split and class ({_e(name)})</h3>")
        parts.append(
            _table(
                ["pathology", "abnormality", "kind", *splits],
                [[*key, *[counts[key].get(s, 0) for s in splits]] for key in sorted(counts)]
                + [["all", "", "", *[layout["splits"][s].get("rows", 0) for s in splits]]],
            )
        )
    leakage = manifest.get("leakage", {})
    parts.append("<h3>Leakage</h3>")
    parts.append(
        _table(
            ["check", "patients"],
            [
                [
                    "in both official splits, before (" + str(leakage.get("rule", "")) + ")",
                    leakage.get("patients_in_official_train_and_test", "-"),
                ],
                ["in two of our splits, after", leakage.get("patients_in_two_splits", "-")],
            ],
        )
    )
    skipped = manifest.get("skipped", [])
    parts.append(f"<h3>Skipped inputs ({len(skipped)})</h3>")
    if skipped:
        reasons: dict = defaultdict(list)
        for item in skipped:
            reasons[str(item.get("reason", "?"))].append(str(item.get("item")))
        parts.append(
            _table(
                ["reason", "inputs", "examples"],
                [[r, len(items), ", ".join(items[:3])] for r, items in sorted(reasons.items())],
            )
        )
    else:
        parts.append("<p>None: every input was prepared.</p>")
    return "".join(parts)


def _curves(labels: np.ndarray, probabilities: np.ndarray, where: str) -> list[str]:
    from tuner.results.evaluate import curve_figures

    titles = {"roc": "ROC", "pr": "precision-recall", "calibration": "calibration"}
    figs = []
    for kind, fig in curve_figures(labels, probabilities, where, size=(3.8, 3.4)):
        fig.axes[0].set_title(f"{titles[kind]}, {where}", fontsize=10)
        figs.append(_figure(fig, f"{titles[kind]} curve, {where}"))
    return figs


def _subgroups(table: dict | None, title: str) -> str:
    if not table:
        return ""
    rows = []
    for factor, groups in (table.get("slices") or {}).items():
        for value, g in groups.items():
            rows.append(
                [
                    factor,
                    value,
                    g.get("rows"),
                    g.get("patients"),
                    g.get("positives"),
                    g.get("roc_auc"),
                    _ci(g.get("roc_auc_95")),
                    g.get("recall"),
                    g.get("specificity"),
                    "FLAGGED" if g.get("flagged") else "",
                ]
            )
    head = [
        "factor",
        "value",
        "rows",
        "patients",
        "positives",
        "AUC",
        "95% CI",
        "recall",
        "specificity",
        "",
    ]
    return f"<h3>{_e(title)}</h3>" + _table(head, rows)


def _read_optional(url: str) -> dict | None:
    return storage.read_json(url) if storage.exists(url) else None


def _promotion_section(experiment: str, promotion, figures: list[int]) -> str:
    from tuner.promote.result import OOF_PREDICTIONS, TEST_PREDICTIONS
    from tuner.results.ledger import read_ledger
    from tuner.training.metrics import binary_metrics

    data = promotion.data
    plan = data.get("plan", {})
    parts = [
        "<h2 id='promotion'>Promotion</h2>",
        f"<p>{_e(promotion.summary())}.</p>",
        f"<p>{_e(plan.get('folds'))} patient-grouped folds x {len(plan.get('seeds', []))} seeds "
        f"on train+val, top {len(data.get('candidates', []))} candidates; final model: "
        f"{_e(data.get('final'))} ({_e(promotion.final_model)}).</p>",
    ]
    ranking = [
        [
            e["rank"],
            e["candidate"],
            e["trial_id"],
            e.get("search_value"),
            e.get("oof_auc_mean"),
            e.get("oof_auc_sd"),
            _ci(e.get("oof_auc_95")),
            ", ".join(f"{s}: {_num(v)}" for s, v in (e.get("oof_auc_by_seed") or {}).items()),
            f"{e.get('wins_across_seeds')}/{len(plan.get('seeds', [])) or '?'}",
        ]
        for e in promotion.ranking
    ]
    parts.append(
        "<h3>Cross-validation: candidates ranked by the OOF AUC interval's lower bound</h3>"
    )
    parts.append(
        _table(
            [
                "rank",
                "candidate",
                "search trial",
                "search value",
                "OOF AUC mean",
                "sd over seeds",
                "95% CI (patients)",
                "AUC per seed",
                "wins across seeds",
            ],
            ranking,
        )
    )
    cells = data.get("cells", [])
    if cells:
        parts.append("<h3>Fold trials</h3>")
        parts.append(
            _table(
                [
                    "candidate",
                    "fold",
                    "seed",
                    "state",
                    "epochs",
                    "best epoch",
                    "fold AUC",
                    "seconds",
                ],
                [
                    [
                        c["candidate"],
                        c["fold"],
                        c["seed"],
                        c["state"],
                        c.get("epochs"),
                        c.get("best_epoch"),
                        (c.get("fold_metrics") or {}).get("val_roc_auc"),
                        c.get("seconds"),
                    ]
                    for c in cells
                ],
            )
        )
    cal = data.get("calibration", {})
    parts.append("<h3>Calibration and threshold (out-of-fold)</h3>")
    parts.append(
        _table(
            [
                "temperature",
                "ECE before",
                "ECE after",
                "Brier before",
                "Brier after",
                "threshold",
                "recall goal",
            ],
            [
                [
                    cal.get("temperature"),
                    cal.get("ece_before"),
                    cal.get("ece_after"),
                    cal.get("brier_before"),
                    cal.get("brier_after"),
                    cal.get("threshold"),
                    data.get("target_recall"),
                ]
            ],
        )
    )
    figs = []
    oof = _read_optional(storage.join(promotion.url, OOF_PREDICTIONS))
    if oof:
        labels, p = np.asarray(oof["labels"]), np.asarray(oof["probabilities"])
        chosen = cal.get("threshold")
        if p.shape[1] == 2 and len(np.unique(labels)) == 2 and chosen is not None:
            # At 0.1 ... 0.9 and at the promotion's own threshold (fixed on these predictions).
            keys = ["recall", "specificity", "precision", "f1", "accuracy"]
            rows, goal = [], data.get("target_recall")
            for t in sorted({*np.round(np.arange(0.1, 1.0, 0.1), 2).tolist(), chosen}):
                values = binary_metrics(labels, p[:, 1], threshold=t)
                rows.append([t, *[values[k] for k in keys], "operating" if t == chosen else ""])
            parts.append(
                f"<h3>Threshold table (out-of-fold, calibrated; recall goal {_num(goal)})</h3>"
            )
            parts.append(_table(["threshold", *keys, ""], rows))
        figs += _curves(labels, p, "out-of-fold")
    test = promotion.test
    if test:
        m = test["per_image"]["metrics"]
        levels = ("per_image", "per_breast")
        parts.append(f"<h3>Test: one look, at the OOF threshold {_num(test.get('threshold'))}</h3>")
        if "two_view" in (test.get("fusion") or "") and "per_breast" in test:
            levels = ("per_breast", "per_image")
            parts.append(
                "<p class='note'>A two-view model (CC + MLO of one breast): per breast is its "
                "own level; each image row carries its breast's probability.</p>"
            )
        parts.append(
            _table(
                ["level", "rows", "patients", *[k for k in m]],
                [
                    [
                        level,
                        test[level]["rows"],
                        test[level].get("patients"),
                        *[_with_ci(test[level], k) for k in m],
                    ]
                    for level in levels
                    if level in test
                ],
            )
        )
        kept = _read_optional(storage.join(promotion.url, TEST_PREDICTIONS))
        if kept:
            figs += _curves(np.asarray(kept["labels"]), np.asarray(kept["probabilities"]), "test")
        parts.append(_subgroups(test.get("subgroups"), "Subgroups, test"))
    else:
        parts.append("<p class='note'>No test look (the dataset has no test split).</p>")
    parts.append(_subgroups(data.get("oof_subgroups"), "Subgroups, out-of-fold"))
    if figs:
        parts.append("<h3>Curves</h3><div class='figs'>" + "".join(figs) + "</div>")
    else:
        parts.append(
            "<p class='note'>No stored scores to draw curves from (a promotion made before "
            "mammotune kept them).</p>"
        )
    figures[0] += len(figs)
    looks = read_ledger(experiment)
    parts.append(f"<h3>Test looks recorded ({len(looks)})</h3>")
    if len(looks) > 1:
        parts.append(
            f"<p class='warn'>The test split was looked at {len(looks)} times: only the first "
            "look's figures are unbiased.</p>"
        )
    parts.append(
        _table(
            ["look", "at", "what", "AUC", "threshold"],
            [
                [
                    lk["look"],
                    lk.get("at"),
                    lk.get("what"),
                    (lk.get("metrics") or {}).get("roc_auc"),
                    lk.get("threshold"),
                ]
                for lk in looks
            ],
        )
    )
    compute = data.get("compute") or {}
    if compute:
        parts.append(
            f"<p>Promotion compute: {compute.get('promotion_trial_seconds', 0) / 3600:.3f} "
            f"trial-hours over {compute.get('trials')} trials, "
            f"{_num(compute.get('ratio_to_search'), 2)}x the search's.</p>"
        )
    return "".join(parts)


def _card_section(card: dict | None, why: str | None) -> str:
    parts = ["<h2 id='model-card'>Model card</h2>"]
    if card is None:
        return "".join(parts) + f"<p class='note'>{_e(why)}</p>"
    parts.append(
        "<p class='note'>After Mitchell et al., Model Cards for Model Reporting (2019). "
        f"Also written as {CARD_FILE}.</p>"
    )
    for key, value in card.items():
        if key in ("format", "model"):
            continue
        if key == "quantitative_analyses" and isinstance(value.get("test"), dict):
            # The subgroup tables are in the promotion's section already.
            value = {**value, "test": {k: v for k, v in value["test"].items() if k != "subgroups"}}
        parts.append(f"<h3>{_e(key.replace('_', ' ').capitalize())}</h3>{_render(value)}")
    return "".join(parts)


def _render(value) -> str:
    if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
        return _kv([[str(k).replace("_", " "), v] for k, v in value.items()])
    if isinstance(value, dict):
        return (
            "<dl>"
            + "".join(
                f"<dt>{_e(str(k).replace('_', ' '))}</dt><dd>{_render(v)}</dd>"
                for k, v in value.items()
            )
            + "</dl>"
        )
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return "<ul>" + "".join(f"<li>{_num(v)}</li>" for v in value) + "</ul>"
        return "".join(_render(v) for v in value)
    return _num(value, 4) if isinstance(value, float) else _e(value if value is not None else "-")


# ---------------------------------------------------------------------------------- main
def _out_paths(experiment: str, out) -> tuple[str, str]:
    if out is not None:
        out = str(out)
        if out.startswith("file://"):
            out = storage.normalize(out).removeprefix("file://")
    if out is None:
        if not storage.is_local(experiment):
            raise UserError(
                f"{experiment} is in a bucket: give --out FILE, a local HTML file to write"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = os.path.join(storage.normalize(experiment), "reports", stamp, "report.html")
    if "://" in out:
        raise UserError(
            f"--out {out}: the report is a local file; write it here and copy it to the bucket"
        )
    out = os.path.abspath(out)
    if os.path.isdir(out):
        raise UserError(f"{out} is a folder; give --out a file name, e.g. {out}/report.html")
    card = os.path.join(os.path.dirname(out), CARD_FILE)
    for path in (out, card):
        if os.path.exists(path):
            raise UserError(f"{path} exists; give --out a new file (nothing is overwritten)")
    return out, card


def search_report(experiment: str, out: str | None = None, *, study: str | None = None) -> Report:
    """Write the HTML report of ``experiment`` to ``out`` (default:
    ``EXP/reports/<UTC time>/report.html``) and ``model_card.json`` beside it.

    An experiment with no finished trial gets a report that says so.

    Args:
        study: the Optuna storage to read the study from (a search run with ``--study``);
            by default only the copy the experiment holds is read.

    Raises:
        UserError: no experiment at ``experiment``; ``out`` or its model_card.json exists.
    """
    from tuner.promote.result import latest_promotion
    from tuner.results.leaderboard import experiment_file
    from tuner.results.model_card import model_card
    from tuner.training.checkpoint import open_model

    experiment = storage.normalize(experiment)
    storage.check_location(experiment)
    meta = storage.read_json(experiment_file(experiment))
    out, card_path = _out_paths(experiment, out)
    board, rows = _trials(experiment)
    figures, notes = [0], []
    name = meta["space"].get("name") or os.path.basename(experiment)
    finished = [t for t in board.trials if t.status in ("done", "stopped")]
    promotion = latest_promotion(experiment) if board.trials else None
    sections = ["search", "data"]
    body = []
    if not finished:
        notes.append("no trial has finished yet")
        body.append(
            f"<p class='warn'>No trial of this search has finished yet ({len(board.trials)} "
            "started): the figures below are what storage holds so far.</p>"
        )
    space = meta["space"]
    ledger = compute_ledger(board, rows, space.get("resources", {}), _first(space))
    body.append(_search_section(meta, board, rows, ledger, figures))
    if finished:
        body.append(_importance_section(meta, experiment, board, figures, notes, study))
    body.append(_leaderboard_section(board))
    body.append(_data_section(meta, experiment, notes))
    if promotion is not None:
        sections.append("promotion")
        body.append(_promotion_section(experiment, promotion, figures))
    card, why = None, "No model yet: no trial has a checkpoint."
    model_url = (
        promotion.final_model if promotion else board.best.checkpoint if board.best else None
    )
    if model_url:
        card = model_card(open_model(model_url), experiment=experiment)
        sections.append("model card")
    body.append(_card_section(card, why))
    nav = "".join(f"<a href='#{s.replace(' ', '-')}'>{_e(s.capitalize())}</a>" for s in sections)
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    document = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>mammotune report: {_e(name)}</title>"
        # No request may leave the file: forbid every fetch but inline data.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'\">"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>mammotune report: {_e(name)}</h1>"
        f"<p class='note'>{_e(experiment)} &middot; generated {created} by mammotune "
        f"{__version__} &middot; search started {_e(meta.get('created'))}</p>"
        f"<nav>{nav}</nav>{''.join(body)}</body></html>"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if card is not None:
        from tuner.results.evaluate import json_safe

        with open(card_path, "w") as f:
            json.dump(json_safe(card), f, indent=2)
    with open(out, "w", encoding="utf-8") as f:
        f.write(document)
    return Report(
        path=out,
        model_card=card_path if card is not None else None,
        sections=sections,
        trials=len(board.trials),
        figures=figures[0],
        notes=notes,
        compute=ledger,
    )
