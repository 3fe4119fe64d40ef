"""What a fault costs a search on a real two-node cluster, measured in one run.

The local stack of ``infra/local/stack.py`` (a Ray head and a Ray worker node, 1 CPU each,
token authentication on, moto's S3 server); the dataset and experiments in its buckets. The
same seeded 4-trial search (small_vgg_bn, 48 px lesion-vs-tissue tiles, 4 epochs, 2 trials
at a time) runs through `mammotune search --address` three times:

- baseline: nothing goes wrong;
- node lost: the worker node is killed (SIGKILL of its whole process tree) once a trial
  there has a checkpoint; the survivor finishes the search alone;
- S3 frozen: the S3 server is paused (SIGSTOP) for 20 s after the first checkpoint.

Printed: wall time of each search and its ratio to the baseline, epochs trained in all
(re-run epochs show up here), failed attempts, and whether every trial finished.

    python benchmarks/cluster_faults.py [--freeze-s 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuner.search.experiment import trial_results

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / ".work"

SPACE = """
name: {name}
task: lesion_vs_tissue
trials: 4
max_concurrent: 2
seed: 5
tpe: {{n_startup_trials: 4}}
asha: {{grace_period: 4}}
fixed: {{epochs: 4, batch_size: 16, input_size: 48, backbone: small_vgg_bn}}
space:
  dropout: {{type: float, low: 0.0, high: 0.3}}
  lr: {{type: log-float, low: 3.0e-4, high: 1.0e-3}}
"""


def _stack_module():
    spec = importlib.util.spec_from_file_location("stack", REPO / "infra" / "local" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(fs, experiment: str) -> dict[str, list[dict]]:
    folders = fs.glob(f"{experiment.removeprefix('s3://')}/trial_*")
    return {f.rsplit("/", 1)[-1]: trial_results(fs, f) for f in folders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze-s", type=float, default=20.0)
    args = parser.parse_args()

    import s3fs

    WORK.mkdir(exist_ok=True)
    stack = _stack_module().LocalStack(Path(tempfile.mkdtemp(prefix="stack-", dir=WORK)))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    stack.up(env=env)
    env = {**env, **stack.client_env()}
    fs = s3fs.S3FileSystem(
        endpoint_url=stack.s3_endpoint, key="bench", secret="bench", skip_instance_cache=True
    )
    work = Path(tempfile.mkdtemp(prefix="faults-", dir=WORK))

    def mammotune(*argv, wait=True, log=None):
        command = [sys.executable, "-m", "tuner", *map(str, argv)]
        if wait:
            result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
            if result.returncode != 0:
                raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
            return result
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    try:
        source = work / "source"
        mammotune("synth", source, "--patients", 80, "--seed", 7, "--difficulty", 0.2)
        mammotune(
            "prepare",
            source,
            "s3://data/cbis",
            "--sizes",
            48,
            "--context-px",
            150,
            "--train-variants",
            2,
            "--val-fraction",
            0.25,
            "--address",
            stack.address,
        )
        worker = stack.node_ids()["worker"]
        runs = {}
        for name in ("baseline", "node-lost", "s3-frozen"):
            space = work / f"{name}.yaml"
            space.write_text(SPACE.format(name=name))
            experiment = f"s3://runs/{name}"
            log = (work / f"{name}.log").open("w")
            started = time.monotonic()
            driver = mammotune(
                "search",
                "--space",
                space,
                "--data",
                "s3://data/cbis",
                "--storage",
                experiment,
                "--study",
                f"sqlite:///{work}/{name}.db",
                "--max-failures",
                2,
                "--address",
                stack.address,
                wait=False,
                log=log,
            )
            while driver.poll() is None and name != "baseline":
                rows = _rows(fs, experiment)
                if name == "node-lost" and any(
                    r and r[-1]["node_id"] == worker and len(r) < 4 for r in rows.values()
                ):
                    stack.kill_node("worker")
                    break
                if name == "s3-frozen" and any(rows.values()):
                    stack.pause_s3()
                    time.sleep(args.freeze_s)
                    stack.resume_s3()
                    break
                time.sleep(0.5)
            code = driver.wait()
            seconds = time.monotonic() - started
            status = json.loads(mammotune("status", experiment, "--json").stdout)
            rows = _rows(fs, experiment)
            runs[name] = {
                "seconds": seconds,
                "epochs": sum(len(r) for r in rows.values()),
                "failures": status["failures"],
                "finished": f"{status['finished']}/{status['planned_trials']}",
                "exit": code,
            }
            if name == "node-lost":
                stack.restart_worker()
    finally:
        stack.down()

    base = runs["baseline"]["seconds"]
    print(
        f"{'search':<10} {'wall s':>7} {'x baseline':>10} {'epochs':>6} {'failures':>8} "
        f"{'finished':>8}"
    )
    for name, run in runs.items():
        print(
            f"{name:<10} {run['seconds']:>7.1f} {run['seconds'] / base:>10.2f} {run['epochs']:>6} "
            f"{run['failures']:>8} {run['finished']:>8}"
        )
    frozen = runs["s3-frozen"]["seconds"] - base
    print(
        f"S3 frozen {args.freeze_s:.0f} s: the search took {frozen:.1f} s longer "
        f"({frozen / args.freeze_s:.2f}x the freeze)"
    )


if __name__ == "__main__":
    main()
