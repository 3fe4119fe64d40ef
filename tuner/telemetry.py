"""The search's own Ray metrics, which ``dashboards/grafana/mammotune.json`` reads.

Recorded with :mod:`ray.util.metrics` and exported by every node's metrics agent on its
Prometheus endpoint (``--metrics-export-port``), beside Ray's node and GPU metrics. Ray adds
the ``ray_`` prefix on export: ``mammotune_trials`` is scraped as ``ray_mammotune_trials``.

Trials record per-epoch figures (tagged with the experiment and trial); the driver records
trials by state and the best metric so far (tagged with the experiment).
"""

from __future__ import annotations

from functools import cache

__all__ = ["METRICS", "exported_name", "record_epoch", "record_search"]

# name -> (kind, description, tag keys); histograms also have boundaries below.
METRICS = {
    "mammotune_trials": ("gauge", "Trials of the search by state", ("experiment", "state")),
    "mammotune_best_metric": (
        "gauge",
        "Best value of the search metric so far",
        ("experiment", "metric"),
    ),
    "mammotune_trial_images_per_second": (
        "gauge",
        "Training images per second of a trial's last epoch",
        ("experiment", "trial"),
    ),
    "mammotune_trial_data_wait_share": (
        "gauge",
        "Share of a trial's last training epoch spent waiting for the next batch (0-1)",
        ("experiment", "trial"),
    ),
    "mammotune_epoch_seconds": (
        "histogram",
        "Wall time of one epoch (training and validation)",
        ("experiment",),
    ),
    "mammotune_epochs": ("counter", "Epochs finished by all trials", ("experiment",)),
}
EPOCH_BOUNDARIES = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600]


def exported_name(name: str) -> str:
    """The name Prometheus scrapes for one of :data:`METRICS`."""
    return f"ray_{name}"


@cache
def _metric(name: str):
    from ray.util import metrics

    kind, description, tags = METRICS[name]
    if kind == "gauge":
        return metrics.Gauge(name, description=description, tag_keys=tags)
    if kind == "counter":
        return metrics.Counter(name, description=description, tag_keys=tags)
    return metrics.Histogram(
        name, description=description, boundaries=EPOCH_BOUNDARIES, tag_keys=tags
    )


def _enabled() -> bool:
    import ray

    return ray.is_initialized()


def record_epoch(
    experiment: str, trial: str, *, images_per_s: float, data_wait_share: float, seconds: float
) -> None:
    """A trial's figures for one epoch (no-op outside Ray)."""
    if not _enabled():
        return
    tags = {"experiment": experiment, "trial": trial}
    _metric("mammotune_trial_images_per_second").set(images_per_s, tags=tags)
    _metric("mammotune_trial_data_wait_share").set(data_wait_share, tags=tags)
    _metric("mammotune_epoch_seconds").observe(seconds, tags={"experiment": experiment})
    _metric("mammotune_epochs").inc(1, tags={"experiment": experiment})


def record_search(
    experiment: str, states: dict[str, int], *, metric: str, best: float | None
) -> None:
    """The driver's view: trials per state and the best metric so far (no-op outside Ray)."""
    if not _enabled():
        return
    for state, count in states.items():
        _metric("mammotune_trials").set(count, tags={"experiment": experiment, "state": state})
    if best is not None:
        _metric("mammotune_best_metric").set(
            best, tags={"experiment": experiment, "metric": metric}
        )
