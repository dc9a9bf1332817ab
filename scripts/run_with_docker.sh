#!/usr/bin/env bash
# Runs the MLPerf harness (scripts/run_and_time.sh) NEXP times in one unprivileged tf_rn50 container on
# this host, dropping the page cache from the host before each run, as the seed's harness did.
#
#   CONT=IMAGE DATADIR=/host/imagenet LOGDIR=/host/logs [NPROC=8 NEXP=5] scripts/run_with_docker.sh [--dry-run]
#
# Required environment (no defaults: nothing about this host is assumed):
#   CONT      the image built from ./Dockerfile, e.g. registry/tf_rn50:25.02
#   DATADIR   host folder with the dataset (train.rec/.idx, val.rec/.idx); mounted read-only at /data
#   LOGDIR    host folder for logs and results; created if missing; mounted writable at /results
# Optional:
#   FLAGFILE  the configuration, in the image (default flags/nf5488.cfg, the seed's 8-GPU setup)
#   NPROC, EXTRA_ARGS, SEED   passed to run_and_time.sh (its defaults apply when unset; without SEED
#             every run gets a fresh random seed)
#   NEXP      runs (default 1). One container serves them all (docker run -d ... sleep infinity, then
#             one docker exec per run), so it starts once; it is removed at the end, also on an error
#             or Ctrl-C.
#   DOCKER_GPUS   value of docker run --gpus (default all)
#   CLEAR_CACHES  1 (default): before each run, `sync && sudo -n /sbin/sysctl vm.drop_caches=3` on the
#             host (without sudo as root); the run then logs cache_clear true. Needs root or passwordless
#             sudo for that command (sudoers: `USER ALL=(root) NOPASSWD: /sbin/sysctl vm.drop_caches=3`);
#             with neither, the script stops before the first run.
#             0: no drop; the runs log cache_clear false (not a valid MLPerf result).
#   DOCKER_PRIVILEGED  1: add --privileged, which gives the container every device and capability of
#             the host. Nothing here needs it (default 0); it is for tools that do, e.g. profilers.
# Files in LOGDIR are yours: the container runs as you (--user $(id -u):$(id -g), HOME=/tmp; a run
# writes nowhere else). Start the script as yourself, not under sudo: it uses sudo only for the drop.
# --dry-run prints the commands instead of running them, and checks nothing on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
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
NEXP=${NEXP:-1} CLEAR_CACHES=${CLEAR_CACHES:-1} DOCKER_PRIVILEGED=${DOCKER_PRIVILEGED:-0}
[[ "$NEXP" =~ ^[1-9][0-9]*$ ]] || die "NEXP=$NEXP: want a number of runs, 1 or more"
[[ "$CLEAR_CACHES" =~ ^[01]$ ]] || die "CLEAR_CACHES=$CLEAR_CACHES: want 0 or 1"
[[ "$DOCKER_PRIVILEGED" =~ ^[01]$ ]] || die "DOCKER_PRIVILEGED=$DOCKER_PRIVILEGED: want 0 or 1"
if [ -z "${FLAGFILE:-}" ]; then
  FLAGFILE=flags/nf5488.cfg
  echo "run_with_docker.sh: FLAGFILE not set: using $FLAGFILE (the seed's setup, one rank per GPU: NPROC=8)"
fi
[ "$dry_run" = 1 ] || mkdir -p "$LOGDIR" || die "cannot create LOGDIR=$LOGDIR"
LOGDIR=$(realpath -m "$LOGDIR")

uid=$(id -u)
drop_caches=(/sbin/sysctl vm.drop_caches=3)
[ "$uid" = 0 ] || drop_caches=(sudo -n "${drop_caches[@]}")
container=tf_rn50_$$
docker_run=(docker run -d --rm --init --name "$container" --gpus "${DOCKER_GPUS:-all}")
[ "$DOCKER_PRIVILEGED" = 0 ] || docker_run+=(--privileged)
# The seed's options: NCCL and DALI share memory between ranks (host IPC) and pin memory (memlock);
# NCCL/Gloo across nodes use the host's network. The uid has no home in the image, hence HOME.
docker_run+=(--ipc=host --net=host --ulimit memlock=-1 --ulimit stack=67108864
  --user "$uid:$(id -g)" -e HOME=/tmp -v "$DATADIR:/data:ro" -v "$LOGDIR:/results"
  -e DATADIR=/data -e RESULTS_DIR=/results -e "FLAGFILE=$FLAGFILE")
for name in NPROC EXTRA_ARGS SEED; do
  if [ -n "${!name+x}" ]; then docker_run+=(-e "$name=${!name}"); fi
done
docker_run+=("$CONT" sleep infinity)

if [ "$dry_run" = 0 ]; then
  if [ "$CLEAR_CACHES" = 1 ] && [ "$uid" != 0 ] && ! sudo -n -l "${drop_caches[@]:2}" >/dev/null 2>&1; then
    die "CLEAR_CACHES=1 drops the page cache on the host before each run: that needs root or passwordless" \
        "sudo for '${drop_caches[*]:2}' (a sudoers line: $(id -un) ALL=(root) NOPASSWD: ${drop_caches[*]:2})." \
        "Or set CLEAR_CACHES=0: the runs then log cache_clear false."
  fi
  command -v docker >/dev/null || die "docker not found on PATH"
  docker info >/dev/null 2>&1 || die "cannot reach the docker engine (is the daemon running, may you use it?)"
  log="$LOGDIR/run_with_docker_$(date +%y%m%d%H%M%S).log"
  echo "run_with_docker.sh: output also in $log"
  exec > >(trap '' INT TERM; tee -a "$log") 2>&1   # tee outlives Ctrl-C to log the clean-up
fi

step() { show "$@"; [ "$dry_run" = 1 ] || "$@"; }
trap 'step docker rm -f "$container" || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
step "${docker_run[@]}"
rc=0
for ((i = 1; i <= NEXP; i++)); do
  echo "run_with_docker.sh: run $i of $NEXP"
  cleared=()
  if [ "$CLEAR_CACHES" = 1 ]; then
    { step sync && step "${drop_caches[@]}"; } || die "could not drop the page cache before run $i"
    cleared=(-e CACHE_CLEARED=1)   # run_and_time.sh logs cache_clear true without trying itself
  fi
  status=0
  step docker exec "${cleared[@]}" "$container" scripts/run_and_time.sh || status=$?
  [ "$status" = 0 ] || { rc=$status; echo "run_with_docker.sh: run $i exited with status $status" >&2; }
done
exit "$rc"
