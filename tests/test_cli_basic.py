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
    assert "sift-bench" in result.output.lower() or "Usage" in result.output
