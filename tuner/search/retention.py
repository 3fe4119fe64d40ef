"""Which checkpoints a search keeps: every checkpoint of a trial while it may still resume,
then its ``keep`` best by the search's metric and its latest once it has finished (pruned
during the search by ``callbacks.CheckpointRetention``, and when it ends).

Ray Tune can do this itself (``CheckpointConfig(num_to_keep=...)``), but it deletes the
older checkpoints in the driver as soon as a newer one is reported, before its next
experiment snapshot records the newer one. A driver killed in between leaves a snapshot
whose unfinished trials point at deleted checkpoints, and ``--resume`` then fails them with
"Could not recover from checkpoint as it does not exist on storage anymore"
(ray-project/ray#27790). Here a trial's checkpoints are pruned only once the snapshot on
storage, the one a resume would start from, says the trial has finished.
"""

from __future__ import annotations

import posixpath

from tuner import storage
from tuner.search.experiment import trial_checkpoints, trial_states
from tuner.training.metrics import best_first

__all__ = ["prune_checkpoints"]


def prune_checkpoints(
    experiment: str, *, metric: str, mode: str, keep: int, trial_ids=None
) -> dict[str, list[str]]:
    """Delete the checkpoints of finished trials beyond their ``keep`` best and their latest.

    Only trials that Tune's newest snapshot in ``experiment`` records as finished
    (``TERMINATED``) are touched; running, paused and errored trials keep every checkpoint,
    since a resume may restore any of them.

    Args:
        experiment: the experiment URL (``search --storage``).
        metric, mode: the search's metric and direction, as in ``search.json``.
        keep: best checkpoints kept per trial, besides its latest.
        trial_ids: only these trials (all finished ones when None).

    Returns:
        Trial id -> URLs of its deleted checkpoints, for each finished trial looked at.
    """
    fs, path = storage.filesystem(experiment)
    states = trial_states(fs, path)
    finished = [t for t, (status, _) in states.items() if status == "TERMINATED"]
    if trial_ids is not None:
        wanted = set(trial_ids)
        finished = [t for t in finished if t in wanted]
    pruned = {}
    for trial_id in finished:
        folder = posixpath.join(path, f"trial_{trial_id}")
        if not fs.isdir(folder):
            pruned[trial_id] = []
            continue
        checkpoints = trial_checkpoints(fs, folder)
        ranked = sorted(checkpoints, key=lambda item: best_first(item[1].get(metric), mode))
        kept = {p for p, _ in ranked[:keep]} | {p for p, _ in checkpoints[-1:]}
        doomed = [p for p, _ in checkpoints if p not in kept]
        for checkpoint in doomed:
            fs.rm(checkpoint, recursive=True)
        pruned[trial_id] = [storage.join(experiment, posixpath.relpath(p, path)) for p in doomed]
    return pruned
