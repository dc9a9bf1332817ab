#!/usr/bin/env bash
# Pins one training rank to its share of the host's CPU cores and to their NUMA node, then execs
# the command (the idea of the seed's bind.sh, written anew). A no-op (plain exec) when the host has
# one NUMA node, when numactl is missing, when the local rank is unknown, or with BIND=0.
#
#   scripts/bind.sh [--dry-run] [--] COMMAND [ARG...]
#
# Local rank / ranks per host come from the launcher: OMPI_COMM_WORLD_LOCAL_RANK/_SIZE (mpirun),
# HOROVOD_LOCAL_RANK/_SIZE (horovodrun), SLURM_LOCALID/SLURM_NTASKS_PER_NODE (srun).
# Rank i of n gets physical cores [i*C/n, (i+1)*C/n) (plus their hyper-thread siblings, numbered
# C above, as Linux numbers them on x86) and --membind to the NUMA node holding those cores. This
# assumes cores are numbered node by node (node k holds cores k*C/N .. (k+1)*C/N-1), as on a
# two-socket EPYC/Xeon host in NPS1/SNC-off mode; check `numactl --hardware` on a new host.
#
# Topology is read from lscpu; these env variables override it (for testing, or odd hosts):
#   BIND_NUMA_NODES         NUMA nodes on the host
#   BIND_CORES              physical cores on the host (all sockets)
#   BIND_THREADS_PER_CORE   hardware threads per core (2 with SMT on)
#   BIND=0                  disable binding
# --dry-run prints the command that would be exec'd (with numactl or without) and exits 0.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bind.sh: ERROR: $*" >&2; exit 2; }

dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { usage >&2; die "no command given"; }

run() {   # exec "$@", or print it under --dry-run
  if [ "$dry_run" = 1 ]; then echo "exec: $*"; exit 0; fi
  exec "$@"
}
skip() {  # no binding: say why under --dry-run, then run the command unchanged
  [ "$dry_run" = 1 ] && echo "bind.sh: no binding: $1"
  run "${@:2}"
}

lscpu_value() { lscpu 2>/dev/null | awk -F: -v k="$1" '$1 == k { gsub(/ /, "", $2); print $2 }'; }

local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${HOROVOD_LOCAL_RANK:-${SLURM_LOCALID:-}}}
local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:-${HOROVOD_LOCAL_SIZE:-${SLURM_NTASKS_PER_NODE:-}}}
numa_nodes=${BIND_NUMA_NODES:-$(lscpu_value 'NUMA node(s)')}
sockets=$(lscpu_value 'Socket(s)')
cores=${BIND_CORES:-$(( ${sockets:-1} * $(lscpu_value 'Core(s) per socket' || echo 1) ))}
threads=${BIND_THREADS_PER_CORE:-$(lscpu_value 'Thread(s) per core')}
numa_nodes=${numa_nodes:-1}; threads=${threads:-1}
for v in local_rank numa_nodes cores threads; do
  [ -z "${!v}" ] || [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v='${!v}' is not a whole number"
done

[ "${BIND:-1}" != 0 ] || skip "BIND=0" "$@"
[ -n "$local_rank" ] || skip "no local rank in the environment (not started by mpirun/horovodrun/srun)" "$@"
[ "$numa_nodes" -gt 1 ] || skip "$numa_nodes NUMA node" "$@"
if ! [[ "$local_size" =~ ^[1-9][0-9]*$ ]]; then
  skip "ranks per host unknown (no *_LOCAL_SIZE / SLURM_NTASKS_PER_NODE)" "$@"
fi
[ "$local_rank" -lt "$local_size" ] || die "local rank $local_rank >= ranks per host $local_size"

per_rank=$(( cores / local_size ))
[ "$per_rank" -ge 1 ] || skip "$local_size ranks on $cores cores: fewer than one core each" "$@"
first=$(( local_rank * per_rank ))
last=$(( first + per_rank - 1 ))
node=$(( first / (cores / numa_nodes) ))
cpus="$first-$last"
for (( t = 1; t < threads; t++ )); do cpus+=",$(( first + t * cores ))-$(( last + t * cores ))"; done

if [ "$dry_run" = 0 ] && ! command -v numactl >/dev/null; then
  echo "bind.sh: numactl not installed; rank $local_rank runs unbound" >&2
  exec "$@"
fi
run numactl --physcpubind="$cpus" --membind="$node" -- "$@"
