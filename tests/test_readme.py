"""The README and docs/ stay true: links resolve, commands exist, and CI runs the README's set-up commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())  # a '#' line inside a code block is not a heading
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def bash_commands(text: str) -> list[str]:
    """The commands of every ```bash block, continuation lines joined, comments dropped."""
    commands = []
    for lang, body in FENCE.findall(text):
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def setup_blocks() -> tuple[str, str]:
    """The two commands of the README's "Set up" section: install, then test."""
    section = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    install, test = [body.replace("\\\n", " ").strip() for lang, body in FENCE.findall(section) if lang == "bash"]
    return " ".join(install.split()), test


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading '#{anchor}' in {dest.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= 250, f"README.md has {lines} lines; move detail to docs/ (the limit is 250)"


def test_ci_runs_the_readme_test_command() -> None:
    _, test = setup_blocks()
    ci_lines = [line.strip() for line in CI.read_text().splitlines()]
    assert test in ci_lines, f"README's test command {test!r} is not a line of .ci/run"


def test_ci_runs_every_readme_install_step() -> None:
    install, _ = setup_blocks()
    ci = CI.read_text()
    steps = [step.strip() for step in install.split("&&")]
    assert steps[0].startswith("pip install torch==")  # torch first, so pip keeps the build it was given
    missing = [step for step in steps if step not in ci]
    assert not missing, f"README's install steps missing from .ci/run: {missing}"


def test_sift_bench_commands_and_options_exist() -> None:
    """Every `sift-bench ...` line in README and docs/ names a real command and only its real --options."""
    import typer.main

    from sift_bench.cli import app

    root = typer.main.get_command(app)
    problems = []
    for page in PAGES:
        for line in bash_commands(page.read_text()):
            for command in line.split("&&"):
                words = shlex.split(command)
                if not words or words[0] != "sift-bench":
                    continue
                cmd, rest = root, words[1:]
                while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
                    name, rest = rest[0], rest[1:]
                    if name not in cmd.commands:
                        problems.append(f"{page.name}: unknown command {name!r} in {command.strip()!r}")
                        break
                    cmd = cmd.commands[name]
                else:
                    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
                    for word in rest:
                        option = word.split("=")[0]
                        if option.startswith("--") and option not in known:
                            problems.append(f"{page.name}: {option} is not an option of {command.strip()!r}")
    assert not problems, "\n".join(problems)
