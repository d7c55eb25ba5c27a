"""The reports' defaults, written once: the library functions, the CLI options and the dashboard read them here,
so `sift-bench compare`, the CI gate and the dashboard judge a run by the same numbers."""

from __future__ import annotations

# The paired bootstrap over dev examples (`sift_bench.significance`): leaderboard marks, `pairs`, `compare`.
N_RESAMPLES = 1000
CONFIDENCE = 0.95

# `compare`'s rules (see `sift_bench.compare`): the noise band's floor (display units: points for percent
# metrics), and the growth ratios of mean train time and peak memory that flag a cell (0: off).
TOLERANCE = 1.0
TIME_THRESHOLD = 1.5
MEMORY_THRESHOLD = 1.2
