"""Which GPU, DALI device and CPU cores each rank of a host uses: one pure function, tested with
simulated hosts and shown by `--dry_run`, so the GPU-only decisions are visible without a GPU.

Each rank drives exactly one GPU, its local rank's, for both TensorFlow and DALI:
  - the host shows every GPU to every rank (horovodrun, mpirun): local rank i takes GPU i;
  - the launcher already narrowed CUDA_VISIBLE_DEVICES to one GPU per rank (SLURM --gpus-per-task,
    one container per rank): every rank takes the one it sees, GPU 0;
  - more ranks than visible GPUs on a host is an error that names both counts;
  - no GPU: everything on the CPU, as before (DALI with device_id=None).
`gpu` is the index in TensorFlow's list of physical GPUs; `dali_device_id` is DALI's CUDA ordinal.
Both count the GPUs CUDA_VISIBLE_DEVICES leaves visible, so they are the same number.

`cpus` follows scripts/bind.sh: rank i of n takes physical cores [i*C/n, (i+1)*C/n), plus their
hyper-thread siblings numbered C above; None when there is less than one core per rank.
"""
import dataclasses
import os


class PlacementError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class Placement:
  local_rank: int
  gpu: int | None               # index into tf.config.list_physical_devices("GPU")
  dali_device_id: int | None    # DALI's CUDA device ordinal; None runs DALI on the CPU
  cpus: str | None              # numactl --physcpubind list of bind.sh; None: unbound


def cpu_list(local_rank, local_size, cores, threads_per_core=1):
  """The cores bind.sh gives `local_rank` of `local_size` on a host of `cores` physical cores."""
  per_rank = cores // local_size
  if per_rank < 1:
    return None
  first = local_rank * per_rank
  last = first + per_rank - 1
  return ",".join(f"{first + t * cores}-{last + t * cores}" for t in range(threads_per_core))


def narrowed_to_one(env):
  """Whether the launcher left this process exactly one GPU in CUDA_VISIBLE_DEVICES."""
  visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
  return bool(visible) and "," not in visible and visible != "-1"


def placement(local_rank, local_size, visible_gpus, env, cores=0, threads_per_core=1):
  """The Placement of `local_rank` of `local_size` ranks on a host where this process sees
  `visible_gpus` GPUs, given its environment (CUDA_VISIBLE_DEVICES) and `cores` physical cores."""
  if not 0 <= local_rank < local_size:
    raise PlacementError(f"local rank {local_rank} is not in [0, {local_size})")
  cpus = cpu_list(local_rank, local_size, cores, threads_per_core) if cores else None
  if visible_gpus == 0:
    return Placement(local_rank, None, None, cpus)
  if visible_gpus == 1 and narrowed_to_one(env):
    return Placement(local_rank, 0, 0, cpus)
  if local_size > visible_gpus:
    raise PlacementError(f"{local_size} ranks on this host but {visible_gpus} visible GPU(s) "
                         f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most "
                         f"{visible_gpus} ranks per host, one per GPU")
  return Placement(local_rank, local_rank, local_rank, cpus)


def host_plan(gpus_per_host, ranks_per_host, cores, threads_per_core=1):
  """Every local rank's placement on one host where each rank sees all `gpus_per_host` GPUs (the dry run)."""
  return [dataclasses.asdict(placement(r, ranks_per_host, gpus_per_host, {}, cores, threads_per_core))
          for r in range(ranks_per_host)]


def physical_cores():
  """Physical cores of this host (sockets x cores per socket, from sysfs), or the CPU count."""
  cores = set()
  for cpu in range(os.cpu_count() or 1):
    base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
    try:
      with open(base + "physical_package_id") as package, open(base + "core_id") as core:
        cores.add((package.read().strip(), core.read().strip()))
    except OSError:
      return os.cpu_count() or 1
  return len(cores) or os.cpu_count() or 1


def use(place):
  """Makes TensorFlow see only this rank's GPU, growing its memory as needed so DALI's buffers fit
  beside it. Call before TensorFlow touches a device."""
  import tensorflow as tf
  if place.gpu is None:
    return
  gpu = tf.config.list_physical_devices("GPU")[place.gpu]
  tf.config.set_visible_devices([gpu], "GPU")
  tf.config.experimental.set_memory_growth(gpu, True)
