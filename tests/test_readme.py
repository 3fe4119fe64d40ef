"""The README's two commands are what CI runs."""

from tests.conftest import REPO


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    quickstart, tests = block
    assert "mammotune quickstart" in quickstart and "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci and quickstart in ci
