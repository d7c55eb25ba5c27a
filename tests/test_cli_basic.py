from typer.testing import CliRunner

from sift_bench import __version__
from sift_bench.cli import app


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")  # the help page itself, listing the commands
    assert all(f"  {command} " in result.output for command in ("run", "leaderboard", "compare", "pairs"))
