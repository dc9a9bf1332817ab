#!/usr/bin/env bash
# Timed MLPerf runs, the seed's run_and_time in our terms. Per run: drop the page cache when this
# host lets us and log cache_clear truthfully, pick the run's seed, train under horovodrun, keep the
# whole stdout+stderr as $RESULTS_DIR/result_<N>.txt (N = the first unused number from 1) and print
# the RESULT line. The engine logs cache_clear again (--cache_clear) into its own <run dir>/mlperf.log.
#   FLAGFILE=flags/nf5488.cfg NPROC=8 DATADIR=/path/to/imagenet NEXP=5 scripts/run_and_time.sh
# Env: FLAGFILE (required), NPROC ranks (1), DATADIR (--data_dir when set), NEXP runs (1),
# RESULTS_DIR (results/<flagfile name without extension>), EXTRA_ARGS (more flags, split on spaces;
# the ranks start in the clone, so paths in them are read from there),
# SEED (every run's --seed; unset: a fresh random seed per run, as MLPerf wants for a result set),
# CACHE_CLEARED=1 (the caller dropped the page cache just before this call, as run_with_docker.sh does
# on the host: log cache_clear true without trying here; vouches for one run, so NEXP must be 1),
# CLEAR_CACHES=0 (leave the page cache alone and log cache_clear false: for runs that are not results,
# on a machine that does other work; the demo's default).
# Exit status: 0 when every run's training exited 0, else the last failing horovodrun's status
# (horovodrun exits 1 when any rank fails; it does not pass the rank's own code on).
set -euo pipefail

die() { echo "run_and_time.sh: $*" >&2; exit 2; }
: "${FLAGFILE:?set FLAGFILE to an absl flagfile, e.g. flags/nf5488.cfg}"
[ -f "$FLAGFILE" ] || die "FLAGFILE=$FLAGFILE: no such file"
NPROC=${NPROC:-1}
NEXP=${NEXP:-1}
config=$(basename "$FLAGFILE")
RESULTS_DIR=${RESULTS_DIR:-results/${config%.*}}
read -ra extra_args <<< "${EXTRA_ARGS:-}"
FLAGFILE=$(realpath "$FLAGFILE")  # the ranks start in the clone (below)
[ -z "${DATADIR:-}" ] || DATADIR=$(realpath -m "$DATADIR")
[[ " ${EXTRA_ARGS:-} " != *" --seed"* ]] || die "set SEED, not --seed in EXTRA_ARGS (the seed is chosen here)"
[[ "${SEED:-0}" =~ ^[0-9]+$ ]] || die "SEED=$SEED: want a non-negative integer"
[[ "${CLEAR_CACHES:-1}" =~ ^[01]$ ]] || die "CLEAR_CACHES=$CLEAR_CACHES: want 0 or 1"
[ "${CACHE_CLEARED:-0}" != 1 ] || [ "$NEXP" = 1 ] || die "CACHE_CLEARED=1 vouches for one run; NEXP=$NEXP"
[ -z "${SEED:-}" ] || [ "$NEXP" = 1 ] ||
  echo "run_and_time.sh: warning: all $NEXP runs use SEED=$SEED; an MLPerf result set needs a seed per run" >&2

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python; [ -x "$PY" ] || PY=python
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # tf_rn50 importable without an install

one_run() {
  local run_dir=$1 seed=$2 cleared=false start start_fmt status
  # A drop made by the caller (on the host, for a container) counts; else try here, which only root on
  # a real host may do.
  if [ "${CACHE_CLEARED:-0}" = 1 ]; then
    cleared=true; echo "page cache dropped by the caller just before this run (CACHE_CLEARED=1)"
  elif [ "${CLEAR_CACHES:-1}" = 0 ]; then
    echo "page cache not dropped (CLEAR_CACHES=0)"
  elif { sync && echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    cleared=true; echo "page cache dropped"
  else
    echo "page cache not dropped (needs root on the host)"
  fi
  "$PY" -c "from mlperf_logging import mllog
mllog.get_mllogger().event(key=mllog.constants.CACHE_CLEAR, value=${cleared^})"  # True/False

  start=$(date +%s); start_fmt=$(LC_ALL=C date '+%Y-%m-%d %r')
  echo "STARTING TIMING RUN AT $start_fmt"
  # From the clone: our flagfiles name the ones they include from there (--flagfile=flags/nf5488.cfg).
  # horovodrun, minus the 4-second check that Horovod was built with Gloo (tf_rn50/horovodrun.py).
  (cd "$ROOT" && "$PY" -m tf_rn50.horovodrun -np "$NPROC" -H "localhost:$NPROC" --gloo \
    "$PY" -m tf_rn50.main --flagfile="$FLAGFILE" --output_dir="$run_dir" --cache_clear="$cleared" \
    --seed="$seed" ${DATADIR:+--data_dir="$DATADIR"} "${extra_args[@]}")
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
  # 31 random bits: a valid seed for every RNG the engine seeds (NumPy takes < 2**32).
  seed=${SEED:-$(($(od -An -N4 -tu4 /dev/urandom) & 0x7fffffff))}
  status=0
  { echo "Beginning trial $i of $NEXP"; one_run "$(realpath -m "$RESULTS_DIR/run_$n")" "$seed"; } 2>&1 |
    tee "$RESULTS_DIR/result_$n.txt" || status=$?   # one_run's status: tee does not fail
  [ "$status" = 0 ] || { rc=$status; echo "trial $i exited with status $status" >&2; }
done
exit "$rc"
