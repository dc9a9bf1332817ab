#!/usr/bin/env bash
# Timed MLPerf runs, the seed's run_and_time in our terms. Per run: drop the page cache when this
# host lets us and log cache_clear truthfully, train under horovodrun, keep the whole stdout+stderr as
# $RESULTS_DIR/result_<N>.txt (N = the first unused number from 1) and print the RESULT line.
# The engine logs cache_clear again (--cache_clear) into its own <run dir>/mlperf.log.
#   FLAGFILE=flags/nf5488.cfg NPROC=8 DATADIR=/data/imagenet NEXP=5 scripts/run_and_time.sh
# Env: FLAGFILE (required), NPROC ranks (1), DATADIR (--data_dir when set), NEXP runs (1),
# RESULTS_DIR (results/<flagfile name without extension>), EXTRA_ARGS (more flags, split on spaces).
# Exit status: 0 when every run's training exited 0, else the last failing horovodrun's status
# (horovodrun exits 1 when any rank fails; it does not pass the rank's own code on).
set -uo pipefail

: "${FLAGFILE:?set FLAGFILE to an absl flagfile, e.g. flags/nf5488.cfg}"
[ -f "$FLAGFILE" ] || { echo "FLAGFILE=$FLAGFILE: no such file" >&2; exit 2; }
NPROC=${NPROC:-1}
NEXP=${NEXP:-1}
config=$(basename "$FLAGFILE")
RESULTS_DIR=${RESULTS_DIR:-results/${config%.*}}
read -ra extra_args <<< "${EXTRA_ARGS:-}"
FLAGFILE=$(realpath "$FLAGFILE")  # the ranks may start elsewhere

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python; [ -x "$PY" ] || PY=python
HVD=$ROOT/.venv/bin/horovodrun; [ -x "$HVD" ] || HVD=horovodrun
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # tf_rn50 importable without an install

one_run() {
  local run_dir=$1 cleared=false start start_fmt status
  # Only root on a real host may drop the page cache; in a container this usually fails.
  if { sync && echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    cleared=true; echo "page cache dropped"
  else
    echo "page cache not dropped (needs root on the host)"
  fi
  "$PY" -c "from mlperf_logging import mllog
mllog.get_mllogger().event(key=mllog.constants.CACHE_CLEAR, value=${cleared^})"  # True/False

  start=$(date +%s); start_fmt=$(LC_ALL=C date '+%Y-%m-%d %r')
  echo "STARTING TIMING RUN AT $start_fmt"
  "$HVD" -np "$NPROC" -H "localhost:$NPROC" --gloo \
    "$PY" -m tf_rn50.main --flagfile="$FLAGFILE" --output_dir="$run_dir" --cache_clear="$cleared" \
    ${DATADIR:+--data_dir="$DATADIR"} "${extra_args[@]}"
  status=$?
  echo "ENDING TIMING RUN AT $(LC_ALL=C date '+%Y-%m-%d %r')"
  echo "RESULT,IMAGE_CLASSIFICATION,,$(($(date +%s) - start)),${USER:-},$start_fmt"
  return "$status"
}

mkdir -p "$RESULTS_DIR" || exit 2
rc=0
for ((i = 1; i <= NEXP; i++)); do
  n=1
  while [ -e "$RESULTS_DIR/result_$n.txt" ] || [ -e "$RESULTS_DIR/run_$n" ]; do n=$((n + 1)); done
  log=$RESULTS_DIR/result_$n.txt
  { echo "Beginning trial $i of $NEXP"; one_run "$(realpath -m "$RESULTS_DIR/run_$n")"; } 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || { rc=$status; echo "trial $i exited with status $status" >&2; }
done
exit "$rc"
