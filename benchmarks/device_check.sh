#!/usr/bin/env bash
# The device check (issue #15): engine benchmark on CUDA, three short MRPC trials and an out-of-memory trial
# that must come back "failed". At most 5 minutes on one GPU; JSON on stdout. See benchmarks/device_check.py.
#   benchmarks/device_check.sh [--dry-run] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/device_check.py "$@"
