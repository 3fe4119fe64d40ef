"""The fuzz set of crafted inputs, run as the tests run it, with what the tests cannot see.

Size bombs (DICOM, PNG, JPEG, PGM, TIFF headers declaring huge frames), traversal names and
absolute paths in a final model's members, a bundle's file list and a manifest's shards,
non-hex shard digests, a promotion id that climbs out, CSV paths that point outside the
source or run to a megabyte, a bundle that is not the one pinned by its SHA-256, and a bucket
that refuses every request. Each must be refused in one line or skipped with its reason:
``tests/test_crafted_inputs.py``, ``tests/data/test_decode_limits.py`` and
``tests/test_storage.py`` assert that, case by case.

This script runs those tests in a fresh temporary folder (``TMPDIR``) and adds:
- how many crafted inputs there were, and how many were refused or skipped (passed);
- the peak resident memory of the test process and the processes it waited for;
- that nothing was written outside the chosen folders: no ``evil*`` file anywhere under
  /tmp, the home folder or the repository, and no file of the repository changed.

    python benchmarks/crafted_inputs.py
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = [
    "tests/test_crafted_inputs.py",
    "tests/data/test_decode_limits.py",
    "tests/test_storage.py",
]


def _tree(root: Path) -> dict[str, str]:
    """Every tracked or untracked file of the repository (not .venv, .git, caches)."""
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".work"}
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder, name)
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _evil(roots: list[Path]) -> list[str]:
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(("ray", "mt-ray", "session_"))]
            found += [str(Path(folder, n)) for n in files + dirs if n.startswith("evil")]
    return found


def main() -> int:
    before = _tree(REPO)
    with tempfile.TemporaryDirectory(prefix="mammotune-crafted-") as sandbox:
        report = Path(sandbox) / "junit.xml"
        env = {**os.environ, "TMPDIR": sandbox, "RAY_USAGE_STATS_ENABLED": "0"}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FILES,
             f"--junitxml={report}"],
            cwd=REPO, env=env, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        cases = ET.parse(report).getroot().iter("testcase")
        outcome = Counter()
        per_file = Counter()
        for case in cases:
            failed = any(child.tag in ("failure", "error") for child in case)
            skipped = any(child.tag == "skipped" for child in case)
            outcome["failed" if failed else "not run" if skipped else "refused or skipped"] += 1
            per_file[case.get("classname", "")] += 1
        outside = _evil([Path("/tmp"), Path.home(), REPO])
    changed = sorted(k for k, v in _tree(REPO).items() if before.get(k) != v)
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {python}")
    print(f"crafted inputs: {sum(outcome.values())} test cases in {seconds:.0f} s")
    for name, count in sorted(per_file.items()):
        print(f"  {name}: {count}")
    for name, count in sorted(outcome.items()):
        print(f"  {name}: {count}")
    print(f"peak resident memory (test process and the processes it waited for): {peak_mb:.0f} MB")
    print(f"files named evil* outside the test folders: {len(outside)} {outside[:5]}")
    print(f"repository files changed: {len(changed)} {changed[:5]}")
    if result.returncode != 0:
        print(result.stdout[-4000:])
    ok = (
        result.returncode == 0
        and outcome["failed"] == 0
        and sum(outcome.values()) >= 50
        and peak_mb < 2048
        and not outside
        and not changed
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
