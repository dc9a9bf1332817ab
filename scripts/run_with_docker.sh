#!/usr/bin/env bash
# Runs the MLPerf harness (scripts/run_and_time.sh) inside the tf_rn50 container on this host.
#
#   CONT=IMAGE DATADIR=/host/imagenet LOGDIR=/host/logs scripts/run_with_docker.sh [--dry-run]
#
# Required environment (no defaults: nothing about this host is assumed):
#   CONT      the image built from ./Dockerfile, e.g. registry/tf_rn50:25.02
#   DATADIR   host folder with the dataset (train.rec/.idx, val.rec/.idx); mounted read-only at /data
#   LOGDIR    host folder for logs and results; created if missing; mounted at /results
# Optional, passed to run_and_time.sh inside (its defaults apply when unset):
#   FLAGFILE (e.g. flags/nf5488.cfg), NPROC (ranks, one per GPU), NEXP (runs), EXTRA_ARGS, SEED
# Optional, for this script:
#   DOCKER_GPUS    value of docker run --gpus (default all)
#   CLEAR_CACHES   1 (default): run the container --privileged, so that run_and_time.sh can drop
#                  the page cache (a kernel-wide setting) before every run and log cache_clear true,
#                  as MLPerf asks. 0: an unprivileged container; the runs log cache_clear false.
# --dry-run prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "run_with_docker.sh: ERROR: $*" >&2; exit 2; }

dry_run=0
case "${1:-}" in
  --dry-run) dry_run=1 ;;
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; die "unknown argument '$1'" ;;
esac

[ -n "${CONT:-}" ] || die "CONT is not set: the image to run, built from ./Dockerfile (see --help)"
[ -n "${DATADIR:-}" ] || die "DATADIR is not set: the host folder holding the dataset (see --help)"
[ -n "${LOGDIR:-}" ] || die "LOGDIR is not set: the host folder for logs and results (see --help)"
[ -d "$DATADIR" ] || die "DATADIR=$DATADIR is not a folder"
DATADIR=$(cd "$DATADIR" && pwd)
[ "$dry_run" = 1 ] || mkdir -p "$LOGDIR" || die "cannot create LOGDIR=$LOGDIR"
LOGDIR=$(realpath -m "$LOGDIR")

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

docker_cmd=(docker run --rm --init --gpus "${DOCKER_GPUS:-all}")
[ "${CLEAR_CACHES:-1}" = 0 ] || docker_cmd+=(--privileged)
docker_cmd+=(--ipc=host --net=host --ulimit memlock=-1 --ulimit stack=67108864
  -v "$DATADIR:/data:ro" -v "$LOGDIR:/results"
  -e DATADIR=/data -e RESULTS_DIR=/results)
for name in FLAGFILE NPROC NEXP EXTRA_ARGS SEED; do
  if [ -n "${!name+x}" ]; then docker_cmd+=(-e "$name=${!name}"); fi
done
docker_cmd+=("$CONT" scripts/run_and_time.sh)

if [ "$dry_run" = 1 ]; then
  show "${docker_cmd[@]}"
  exit 0
fi
command -v docker >/dev/null || die "docker not found on PATH"
docker info >/dev/null 2>&1 || die "cannot reach the docker engine (is the daemon running, may you use it?)"
log="$LOGDIR/run_with_docker_$(date +%y%m%d%H%M%S).log"
echo "run_with_docker.sh: output also in $log"
"${docker_cmd[@]}" 2>&1 | tee "$log"
