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


def _readme_commands() -> list[str]:
    """Every `mammotune ...` command in the README's bash blocks (continuations joined)."""
    readme = (REPO / "README.md").read_text()
    commands = []
    for block in readme.split("```bash\n")[1:]:
        text = block.split("```", 1)[0].replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("mammotune "):
                commands.append(line)
    return commands


def test_every_readme_command_parses():
    """The docs match the code: each documented command and its options exist."""
    import shlex

    from tuner.cli import build_parser

    commands = _readme_commands()
    assert len(commands) >= 20
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command.split("&&")[0])[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f"README command does not parse: {command}") from None
