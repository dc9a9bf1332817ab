"""GPU placement on simulated hosts: one GPU per rank for TF and DALI alike, by local rank; a launcher's
own narrowing of CUDA_VISIBLE_DEVICES; too many ranks stop with both counts; CPU hosts as before; the
cores agree with scripts/bind.sh."""
import json
import os
import subprocess
import sys

import pytest

from launch import REPO, env
from tf_rn50 import devices


def test_each_rank_of_an_eight_gpu_host_takes_its_local_rank_gpu():
  places = [devices.placement(r, 8, 8, {}) for r in range(8)]
  assert [(p.gpu, p.dali_device_id) for p in places] == [(r, r) for r in range(8)]


def test_a_second_node_uses_the_local_rank_not_the_global_one():
  # Global rank 11 of 16 on two 8-GPU hosts is local rank 3 of its host.
  assert devices.placement(3, 8, 8, {}).gpu == 3


def test_a_launcher_that_narrowed_each_rank_to_one_gpu():
  for local_rank, visible in enumerate(["4", "5", "GPU-8a1b2c3d"]):
    place = devices.placement(local_rank, 8, 1, {"CUDA_VISIBLE_DEVICES": visible})
    assert (place.gpu, place.dali_device_id) == (0, 0)


def test_a_narrowed_list_of_several_gpus_is_indexed_by_local_rank():
  places = [devices.placement(r, 4, 4, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}) for r in range(4)]
  assert [p.gpu for p in places] == [0, 1, 2, 3]


@pytest.mark.parametrize("local_size, gpus, environ", [(8, 4, {}), (2, 1, {}),
                                                        (4, 2, {"CUDA_VISIBLE_DEVICES": "0,1"})])
def test_more_ranks_than_gpus_names_both_counts(local_size, gpus, environ):
  with pytest.raises(devices.PlacementError, match=rf"^{local_size} ranks on this host but {gpus} visible GPU"):
    devices.placement(0, local_size, gpus, environ)


def test_cpu_hosts_place_nothing_on_a_gpu():
  for environ in ({}, {"CUDA_VISIBLE_DEVICES": "-1"}, {"CUDA_VISIBLE_DEVICES": "0"}):
    place = devices.placement(1, 2, 0, environ, cores=2)
    assert (place.gpu, place.dali_device_id, place.cpus) == (None, None, "1-1")


def test_cores_follow_bind_sh_with_and_without_hyperthreads():
  for threads in (1, 2):
    for rank in (0, 5, 7):
      bind = subprocess.run(["scripts/bind.sh", "--dry-run", "true"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "BIND_NUMA_NODES": "2", "BIND_CORES": "128",
                                 "BIND_THREADS_PER_CORE": str(threads), "HOROVOD_LOCAL_RANK": str(rank),
                                 "HOROVOD_LOCAL_SIZE": "8"}, check=True)
      bound = bind.stdout.split("--physcpubind=")[1].split()[0]
      assert devices.cpu_list(rank, 8, 128, threads) == bound
  assert devices.cpu_list(0, 4, 2) is None               # less than a core each: unbound, as bind.sh


def test_the_nf5488_dry_run_places_eight_ranks_on_eight_gpus():
  result = subprocess.run([sys.executable, "-m", "tf_rn50.main", "--flagfile=flags/nf5488.cfg", "--dry_run=16",
                           "--batch_size=204"], cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True, timeout=300)
  placement = json.loads(result.stdout.splitlines()[-1])["placement"]
  assert placement == [{"local_rank": r, "gpu": r, "dali_device_id": r, "cpus": f"{16 * r}-{16 * r + 15}"}
                       for r in range(8)]


def test_use_shows_tensorflow_only_the_ranks_gpu_with_memory_growth(monkeypatch):
  import tensorflow as tf
  gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(8)]
  calls = []
  monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
  monkeypatch.setattr(tf.config, "set_visible_devices", lambda devs, kind: calls.append(("visible", devs, kind)))
  monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda dev, on: calls.append(("growth", dev, on)))
  devices.use(devices.placement(5, 8, len(gpus), {}))
  assert calls == [("visible", [gpus[5]], "GPU"), ("growth", gpus[5], True)]
  calls.clear()
  devices.use(devices.placement(1, 2, 0, {}))
  assert calls == []
