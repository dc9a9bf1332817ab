#!/usr/bin/env bash
# Starts one training run of tf_rn50 on N hosts x G GPUs (one rank per GPU), each rank wrapped in
# scripts/bind.sh, with the Horovod/NCCL environment below.
#
#   scripts/launch.sh --flagfile FILE --hosts h1:G[,h2:G...] [--mode hvd|mpi] [options] [-- MAIN_FLAGS...]
#   scripts/launch.sh --flagfile FILE --mode slurm --nodes N --gpus G [options] [-- MAIN_FLAGS...]
#
# Modes:
#   hvd    horovodrun -np N*G -H HOSTS --gloo      (default; ssh to the hosts, Gloo controller)
#   mpi    mpirun -np N*G -H HOSTS                 (Open MPI; Horovod must be built with MPI)
#   slurm  sbatch scripts/slurm.sbatch              (srun starts the ranks; Horovod needs MPI/PMI)
# Options:
#   --iface NAME   network interface for NCCL, Gloo and MPI TCP traffic (e.g. ib0, eth0)
#   --time HH:MM:SS   SLURM wall time (default 01:00:00, as the seed's config)
#   --no-bind      do not wrap ranks in scripts/bind.sh
#   --dry-run      print the environment and the exact command, run nothing
#   -h, --help
# Local CPU check (2 processes through horovodrun --gloo):
#   scripts/launch.sh --hosts localhost:2 --flagfile flags/smoke.cfg
# The repository must sit at the same path on every host (shared file system or the container's
# /workspace/tf_rn50); the command runs from the repository root there. Every variable below can
# be overridden by setting it in the environment before calling this script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "launch.sh: ERROR: $*" >&2; exit 2; }

mode=hvd hosts="" nodes="" gpus="" flagfile="" iface="" walltime=01:00:00 bind=1 dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) mode=${2:?--mode needs a value}; shift 2 ;;
    --hosts) hosts=${2:?--hosts needs a value}; shift 2 ;;
    --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
    --gpus) gpus=${2:?--gpus needs a value}; shift 2 ;;
    --flagfile) flagfile=${2:?--flagfile needs a value}; shift 2 ;;
    --iface) iface=${2:?--iface needs a value}; shift 2 ;;
    --time) walltime=${2:?--time needs a value}; shift 2 ;;
    --no-bind) bind=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
extra=("$@")   # passed to python -m tf_rn50.main after --flagfile

# --- what to run, and where
[ -n "$flagfile" ] || die "--flagfile is required (e.g. flags/nf5488_2node.cfg)"
[ -f "$flagfile" ] || die "flagfile '$flagfile' not found (paths are relative to the repository root)"
case "$mode" in
  hvd|mpi)
    [ -n "$hosts" ] || die "--mode $mode needs --hosts h1:G,h2:G"
    [ -z "$nodes$gpus" ] || die "--nodes/--gpus are for --mode slurm; give --hosts h1:G,h2:G"
    nodes=0 np=0
    IFS=, read -ra host_list <<<"$hosts"
    for h in "${host_list[@]}"; do
      [[ "$h" =~ ^[A-Za-z0-9._-]+:[1-9][0-9]*$ ]] || die "bad host '$h' in --hosts (want name:slots)"
      nodes=$(( nodes + 1 )); np=$(( np + ${h##*:} ))
    done ;;
  slurm)
    [ -z "$hosts" ] || die "--mode slurm picks the hosts; give --nodes N --gpus G instead of --hosts"
    [[ "$nodes" =~ ^[1-9][0-9]*$ && "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--mode slurm needs --nodes N --gpus G"
    np=$(( nodes * gpus )) ;;
  *) die "--mode must be hvd, mpi or slurm, not '$mode'" ;;
esac

# --- environment: NAME VALUE SOURCE; a value already in the environment wins.
env_names=() env_notes=()
setenv() {
  local name=$1 value=$2 note=$3
  if [ -n "${!name+x}" ]; then value=${!name}; note="from the caller's environment"; fi
  export "$name=$value"
  env_names+=("$name"); env_notes+=("$note")
}
setenv HOROVOD_FUSION_THRESHOLD 67108864 "seed config_NF5488.sh (64 MiB fusion buffer)"
setenv HOROVOD_CYCLE_TIME 0.1 "seed config_NF5488.sh (ms; overrides 0.2 of config_NF5488_common.sh)"
setenv HOROVOD_NUM_NCCL_STREAMS 1 "seed config_NF5488.sh / config_NF5488_common.sh"
setenv HOROVOD_BATCH_D2D_MEMCOPIES 1 "seed Dockerfile ENV (also Horovod's default)"
setenv NCCL_MAX_NCHANNELS 8 "seed NCCL_MAX_RINGS=8 / NCCL_MAX_NRINGS=8 (NCCL's current name)"
setenv NCCL_DEBUG WARN "seed run_and_time.sh default"
if [ -n "$iface" ]; then
  setenv NCCL_SOCKET_IFNAME "$iface" "--iface (seed Dockerfile: ib0)"
fi
if [ "$mode" != hvd ]; then
  setenv OMPI_MCA_btl "^openib" "seed config_NF5488_common.sh (Horovod/NCCL deadlock at scale)"
  if [ "$nodes" -gt 1 ]; then
    setenv HOROVOD_HIERARCHICAL_ALLREDUCE 1 "Horovod docs: NCCL inside a node, MPI across (multi-node, MPI only)"
  fi
fi

python=${PYTHON:-python}
rank_cmd=()
[ "$bind" = 0 ] || rank_cmd+=("$ROOT/scripts/bind.sh")
rank_cmd+=("$python" -m tf_rn50.main "--flagfile=$flagfile" "${extra[@]}")

case "$mode" in
  hvd)
    cmd=(horovodrun -np "$np" -H "$hosts" --gloo)
    [ -z "$iface" ] || cmd+=(--network-interface "$iface")
    cmd+=("${rank_cmd[@]}") ;;
  mpi)
    cmd=(mpirun -np "$np" -H "$hosts" --bind-to none --map-by slot)
    [ "$(id -u)" != 0 ] || cmd+=(--allow-run-as-root)
    [ -z "$iface" ] || cmd+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
    for name in "${env_names[@]}" PATH LD_LIBRARY_PATH PYTHONPATH; do
      if [ -n "${!name+x}" ]; then cmd+=(-x "$name"); fi
    done
    cmd+=("${rank_cmd[@]}") ;;
  slurm)
    export FLAGFILE=$flagfile EXTRA_ARGS="${extra[*]}" PYTHON=$python BIND_RANKS=$bind
    cmd=(sbatch --nodes "$nodes" --ntasks-per-node "$gpus" --gpus-per-node "$gpus" --time "$walltime"
         --job-name tf_rn50 --export ALL scripts/slurm.sbatch) ;;
esac

echo "launch.sh: $mode, $nodes host(s), $np ranks, from $ROOT"
for i in "${!env_names[@]}"; do
  printf '  %s=%s   # %s\n' "${env_names[$i]}" "${!env_names[$i]}" "${env_notes[$i]}"
done
[ "$mode" != slurm ] || printf '  FLAGFILE=%s EXTRA_ARGS=%s PYTHON=%s BIND_RANKS=%s   # read by scripts/slurm.sbatch\n' \
  "$FLAGFILE" "$EXTRA_ARGS" "$PYTHON" "$BIND_RANKS"
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
show "${cmd[@]}"
[ "$dry_run" = 0 ] || exit 0
command -v "${cmd[0]}" >/dev/null || die "${cmd[0]} not found on PATH"
exec "${cmd[@]}"
