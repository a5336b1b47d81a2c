"""Every `evalkit` command shown in README.md and docs/*.md is one evalkit understands as written: its subcommand
exists, every flag it uses exists, and every value parses (the CLI's own parser, without running it). The
commands' behaviour is tested in the other modules; this keeps the documentation from drifting away from them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_commands(markdown: str) -> list[str]:
    """Commands in ```bash blocks: continuation lines joined, comments and blank lines dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.extend(part.strip() for part in re.split(r"&&|;", line) if part.strip())
    return commands


def evalkit_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for command in shell_commands(path.read_text()):
            if command.startswith("evalkit "):
                found.append((path.name, command))
    return found


def test_the_docs_show_evalkit_commands():
    names = {shlex.split(c)[1] for _, c in evalkit_commands()}
    assert {"run", "compare", "gate", "plan", "rescore", "judge", "report", "personas", "import", "demo", "track"} <= names


@pytest.mark.parametrize("where, command", evalkit_commands(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_documented_command_parses(where, command, monkeypatch):
    import typer

    from evalkit.cli.app import app

    # Shell substitutions are the user's values: give them one of the right type.
    command = command.replace('"$(evalkit lm-eval-path)"', "tasks").replace("$suite", "act-fm")
    argv = shlex.split(command)[1:]
    assert "..." not in argv, f"{where}: `{command}` is a sketch, not a command"
    group = typer.main.get_command(app)
    if argv == ["--version"]:
        assert any(p.name == "version" for p in group.params)
        return
    name, rest = argv[0], argv[1:]
    sub = group.get_command(None, name)
    assert sub is not None, f"{where}: `evalkit {name}` is not a command"
    if hasattr(sub, "get_command"):  # a group (judge, import)
        sub, rest = sub.get_command(None, rest[0]), rest[1:]
        assert sub is not None, f"{where}: `{command}` names no such subcommand"
    with sub.make_context(name, list(rest), resilient_parsing=False) as ctx:
        unknown = [p for p in ctx.params if p not in {param.name for param in sub.params}]
        assert not unknown, (where, command)
