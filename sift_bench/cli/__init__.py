"""The `sift-bench` command line: thin commands that parse flags and call library functions.

`main.py` holds the trial and suite commands (trial, plan, run, submit, status, logs, leaderboard,
compare, dashboard), `pairs.py` the `pairs` report, `export.py` the `export` command (experiment trackers),
`evaluate.py` the `eval` group, `analyze.py` the `analyze` group, and `common.py` the consoles and the
bad-input rule (one red line, exit code 2) they all share.
"""

from sift_bench.cli.main import app

__all__ = ["app"]
