#!/usr/bin/env bash
# The README's second command: sets up when needed, then runs the whole test suite on the CPU
# (5.5-7 minutes on 2 cores of an Intel Xeon, an estimated 13-15 on an AMD EPYC; see docs/benchmarks.md §7).
# Arguments go to pytest, e.g. scripts/test.sh tests/test_optim.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider --durations=15 "${@:-tests}"   # -rs: why each skip
