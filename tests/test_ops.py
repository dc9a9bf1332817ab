"""Operations: the Dockerfile (linted: no docker engine here), the launch scripts (dry runs, fake
srun/numactl, one real 2-process horovodrun launch), CPU binding, and the multi-node flagfiles.

Everything but `test_launch_smoke_real` runs in a few seconds and trains nothing: run_and_time.sh is tested with
a fake horovodrun here, and for real under scripts/demo.sh (tests/test_demo_run.py).
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ["scripts/run_and_time.sh", "scripts/run_with_docker.sh", "scripts/launch.sh", "scripts/bind.sh",
           "scripts/slurm.sbatch"]
MULTI_NODE_FLAGFILES = {"nf5488_2node.cfg": 16, "nf5488_8node.cfg": 64}   # flagfile -> ranks
HOST_PATHS = re.compile(r"(?<![\w.])/(home|raid|mnt|nvme\w*|scratch|lustre|gpfs|Users|data|datasets)/")


def run(args, env=None, timeout=60, cwd=ROOT, **kw):
  """Runs a command, from the repository root unless `cwd` says; returns (exit status, stdout + stderr)."""
  full_env = {k: v for k, v in os.environ.items()
              if not k.startswith(("HOROVOD_", "NCCL_", "OMPI_", "SLURM_", "BIND"))}
  full_env.update(env or {})
  p = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, **kw)
  return p.returncode, p.stdout + p.stderr


def pins():
  """requirements.txt as {name: version}."""
  out = {}
  for line in (ROOT / "requirements.txt").read_text().splitlines():
    if "==" in line and not line.startswith("#"):
      name, version = line.strip().split("==")
      out[name.lower()] = version
  return out


def dockerfile_logical_lines():
  """The Dockerfile's instructions, continuation lines joined, comments dropped."""
  text = (ROOT / "Dockerfile").read_text()
  lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
  return [l.strip() for l in "\n".join(lines).replace("\\\n", " ").splitlines() if l.strip()]


# --- shell scripts --------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
def test_script_syntax_and_strict_mode(script):
  path = ROOT / script
  assert os.access(path, os.X_OK), f"{script} is not executable"
  assert "set -euo pipefail" in path.read_text(), f"{script} lacks set -euo pipefail"
  code, out = run(["bash", "-n", script])
  assert code == 0, out


def test_shellcheck_clean():   # scripts/setup.sh installs shellcheck
  code, out = run(["shellcheck", "-x", *SCRIPTS])
  assert code == 0, out


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_have_no_host_paths(script):
  text = (ROOT / script).read_text()
  assert not HOST_PATHS.search(text), f"{script} hard-codes a host path: {HOST_PATHS.search(text)[0]}"


@pytest.mark.parametrize("script", ["scripts/run_with_docker.sh", "scripts/launch.sh", "scripts/bind.sh"])
def test_help_prints_usage(script):
  code, out = run([script, "--help"])
  assert code == 0 and "--dry-run" in out, out


# --- Dockerfile -----------------------------------------------------------------------------

def test_dockerfile_base_image_pinned():
  froms = [l for l in dockerfile_logical_lines() if l.upper().startswith("FROM ")]
  assert froms == ["FROM nvcr.io/nvidia/tensorflow:25.02-tf2-py3"], froms
  assert "latest" not in froms[0]


def test_dockerfile_has_no_host_paths():
  text = (ROOT / "Dockerfile").read_text()
  assert not HOST_PATHS.search(text), HOST_PATHS.search(text)[0]
  for line in dockerfile_logical_lines():   # COPY/ADD only from the build context
    if line.upper().startswith(("COPY ", "ADD ")):
      assert not re.search(r"\s/|\.\./|https?://", line.split(None, 1)[1].rsplit(None, 1)[0]), line


def test_dockerfile_checks_the_stack_at_build_time():
  checks = " ".join(l for l in dockerfile_logical_lines() if l.startswith("RUN ") and "import" in l)
  for needed in ["import tensorflow", "horovod.tensorflow", "nccl_built()", "nvidia.dali",
                 "nvidia.dali.plugin.tf", "mlperf_logging", "tf_rn50", "horovodrun --check-build",
                 r"\[X\] NCCL"]:
    assert needed in checks, f"the build-time check lacks {needed!r}"


def test_dockerfile_pip_installs_match_requirements():
  want = pins()
  installs = []
  for line in dockerfile_logical_lines():
    for cmd in re.findall(r"pip install ([^&|)]*)", line):
      installs += [t for t in cmd.split() if not t.startswith("-")]
  assert installs, "no pip install found"
  for token in installs:
    if token == ".":
      continue   # the package itself
    assert "==" in token, f"unpinned pip install {token!r}"
    name, version = token.split("==")
    assert want.get(name.lower()) == version, f"{token} but requirements.txt pins {want.get(name.lower())}"


def test_dockerignore_keeps_venv_and_git_out():
  ignored = (ROOT / ".dockerignore").read_text().split()
  assert ".venv" in ignored and ".git" in ignored


# --- run_with_docker.sh ---------------------------------------------------------------------

def docker_dry_run(tmp_path, **env):
  """run_with_docker.sh --dry-run with a fresh DATADIR and LOGDIR: (output lines, data, logs).
  An `env` value of None leaves that variable unset."""
  data, logs = tmp_path / "imagenet", tmp_path / "logs"
  data.mkdir()
  env = {"CONT": "registry/tf_rn50:25.02", "DATADIR": str(data), "LOGDIR": str(logs),
         "FLAGFILE": "flags/nf5488.cfg", **env}
  code, out = run(["scripts/run_with_docker.sh", "--dry-run"], {k: v for k, v in env.items() if v is not None})
  assert code == 0, out
  assert not logs.exists(), "a dry run created LOGDIR"
  return out.splitlines(), data, logs


def test_run_with_docker_dry_run(tmp_path):
  """The default: one unprivileged container as the caller, the page cache dropped on the host before
  each run, then that run told so; the container removed at the end."""
  lines, data, logs = docker_dry_run(tmp_path, NPROC="8", NEXP="3")
  start = lines[0]
  assert start.startswith("+ docker run -d --rm --init --name tf_rn50_") and start.endswith(
      " registry/tf_rn50:25.02 sleep infinity"), start
  for part in [f" -v {data}:/data:ro ", f" -v {logs}:/results ", f" --user {os.getuid()}:{os.getgid()} ",
               " -e FLAGFILE=flags/nf5488.cfg ", " -e NPROC=8 ", " -e DATADIR=/data ", " -e RESULTS_DIR=/results ",
               " --gpus all ", " --ipc=host ", " --net=host ", " --ulimit memlock=-1 "]:
    assert part in start, f"{part!r} not in {start}"
  assert "--privileged" not in "\n".join(lines) and "NEXP" not in start, start
  name = start.split(" --name ")[1].split()[0]
  drop = "+ /sbin/sysctl vm.drop_caches=3" if os.getuid() == 0 else "+ sudo -n /sbin/sysctl vm.drop_caches=3"
  run_lines = ["+ sync", drop, f"+ docker exec -e CACHE_CLEARED=1 {name} scripts/run_and_time.sh"]
  assert lines[1:] == sum(([f"run_with_docker.sh: run {i} of 3", *run_lines] for i in (1, 2, 3)), []) + [
      f"+ docker rm -f {name}"], "\n".join(lines)


def test_run_with_docker_without_cache_clearing(tmp_path):
  lines, _, _ = docker_dry_run(tmp_path, CLEAR_CACHES="0", NEXP="2")
  execs = [l for l in lines if l.startswith("+ docker exec ")]
  assert len(execs) == 2 and all(" -e CACHE_CLEARED" not in l for l in execs), lines
  assert not any("sync" in l or "drop_caches" in l for l in lines), lines


def test_run_with_docker_privileged_only_when_asked(tmp_path):
  lines, _, _ = docker_dry_run(tmp_path, DOCKER_PRIVILEGED="1")
  assert " --gpus all --privileged " in lines[0], lines[0]


def test_run_with_docker_defaults_the_flagfile(tmp_path):
  lines, _, _ = docker_dry_run(tmp_path, FLAGFILE=None, SEED="7")
  assert "FLAGFILE not set: using flags/nf5488.cfg" in lines[0], lines
  assert " -e FLAGFILE=flags/nf5488.cfg " in lines[1] and " -e SEED=7 " in lines[1], lines[1]


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker CLI to parse the commands")
def test_run_with_docker_commands_parse_in_the_docker_cli(tmp_path):
  """The real docker CLI checks options and their values before it contacts an engine: every
  command of the dry run must get as far as 'Cannot connect' (there is no engine here)."""
  lines, _, _ = docker_dry_run(tmp_path, DOCKER_PRIVILEGED="1", SEED="7", EXTRA_ARGS="--log_every=5 --noxla")
  commands = [shlex.split(l[2:]) for l in lines if l.startswith("+ docker ")]
  assert [c[1] for c in commands] == ["run", "exec", "rm"], commands
  for command in commands:
    code, out = run(command, {"DOCKER_HOST": f"unix://{tmp_path}/no_engine.sock", "HOME": str(tmp_path)})
    assert code != 0 and "Cannot connect to the Docker daemon" in out, (command, out)


@pytest.mark.parametrize("env, message", [
    ({"DATADIR": None}, "DATADIR is not set"), ({"CONT": None}, "CONT is not set"),
    ({"LOGDIR": None}, "LOGDIR is not set"), ({"DATADIR": "/no/such/folder"}, "is not a folder"),
    ({"CLEAR_CACHES": "yes"}, "CLEAR_CACHES=yes: want 0 or 1"), ({"NEXP": "0"}, "NEXP=0: want a number"),
    ({"DOCKER_PRIVILEGED": "true"}, "DOCKER_PRIVILEGED=true: want 0 or 1")])
def test_run_with_docker_rejects_bad_env(tmp_path, env, message):
  full = {"CONT": "img", "DATADIR": str(tmp_path), "LOGDIR": str(tmp_path / "l"), "FLAGFILE": "x.cfg", **env}
  code, out = run(["scripts/run_with_docker.sh", "--dry-run"], {k: v for k, v in full.items() if v is not None})
  assert code == 2 and message in out, out


FAKE_DOCKER = """echo "DOCKER $*"
case "$1" in exec) [ -z "${EXEC_SLEEP:-}" ] || sleep "$EXEC_SLEEP"; exit "${EXEC_STATUS:-0}" ;; esac
"""


def fake_host(tmp_path, sudo_allowed):
  """A non-root caller (uid 1000), a sudo that may or may not run the drop, and a sync and a docker CLI
  that print what they are asked; returns the environment for run_with_docker.sh."""
  fake_tool(tmp_path, "id", 'case "$1" in -un) echo tester ;; *) echo 1000 ;; esac\n')
  fake_tool(tmp_path, "sync", "echo SYNC\n")   # the real one may take seconds on a busy machine
  fake_tool(tmp_path, "sudo", 'echo "SUDO $*"\n' if sudo_allowed else "exit 1\n")
  path = fake_tool(tmp_path, "docker", FAKE_DOCKER)
  (tmp_path / "data").mkdir()
  return {"PATH": path, "CONT": "img", "DATADIR": str(tmp_path / "data"), "LOGDIR": str(tmp_path / "logs")}


def test_run_with_docker_needs_root_or_sudo_to_drop_the_cache(tmp_path):
  code, out = run(["scripts/run_with_docker.sh"], fake_host(tmp_path, sudo_allowed=False))
  assert code == 2 and "needs root or passwordless sudo" in out and "CLEAR_CACHES=0" in out, out
  assert "DOCKER" not in out, "stopped only after touching docker"


def test_run_with_docker_runs_and_cleans_up(tmp_path):
  """Through a fake docker and sudo: the order of the calls, every run tried although run 1 fails, the
  failing status passed on, the container removed, the host-side log kept in LOGDIR."""
  env = {**fake_host(tmp_path, sudo_allowed=True), "NEXP": "2", "EXEC_STATUS": "3"}
  code, out = run(["scripts/run_with_docker.sh"], env)
  assert code == 3, out
  name = re.search(r"--name (tf_rn50_\d+)", out)[1]
  calls = [l.replace(name, "NAME") for l in out.splitlines() if l.startswith(("DOCKER ", "SUDO ", "SYNC"))]
  drop = ["SYNC", "SUDO -n /sbin/sysctl vm.drop_caches=3"]
  run_1 = "DOCKER exec -e CACHE_CLEARED=1 NAME scripts/run_and_time.sh"
  assert calls[0].startswith("DOCKER run -d --rm --init --name NAME ") and calls[0].endswith(" img sleep infinity")
  assert calls[1:] == [*drop, run_1, *drop, run_1, "DOCKER rm -f NAME"], calls
  assert " --user 1000:1000 " in out and "run 2 exited with status 3" in out, out
  (log,) = (tmp_path / "logs").glob("run_with_docker_*.log")
  assert "DOCKER rm -f tf_rn50_" in log.read_text()


def test_run_with_docker_removes_the_container_on_ctrl_c(tmp_path):
  env = {**os.environ, **fake_host(tmp_path, sudo_allowed=True), "EXEC_SLEEP": "30"}
  out = tmp_path / "out.txt"
  with out.open("w") as f:
    # SIGINT as at a terminal: a suite started in the background (`(scripts/test.sh &)`) hands its children
    # SIGINT ignored, which bash can then neither trap nor undo.
    p = subprocess.Popen(["scripts/run_with_docker.sh"], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline = time.time() + 60
  while "DOCKER exec" not in out.read_text() and time.time() < deadline:
    time.sleep(0.1)
  os.killpg(p.pid, signal.SIGINT)   # what Ctrl-C does: the whole foreground group gets it
  assert p.wait(timeout=60) == 130, out.read_text()
  text = out.read_text()
  assert "DOCKER exec" in text and "DOCKER rm -f tf_rn50_" in text, text


# --- run_and_time.sh ------------------------------------------------------------------------

@pytest.mark.parametrize("env, message", [
    ({"SEED": "abc"}, "SEED=abc: want a non-negative integer"),
    ({"EXTRA_ARGS": "--log_every=5 --seed=3"}, "set SEED, not --seed in EXTRA_ARGS"),
    ({"CACHE_CLEARED": "1", "NEXP": "2"}, "CACHE_CLEARED=1 vouches for one run"),
    ({"CLEAR_CACHES": "no"}, "CLEAR_CACHES=no: want 0 or 1"),
])
def test_run_and_time_rejects_bad_env(tmp_path, env, message):
  code, out = run(["scripts/run_and_time.sh"], {"FLAGFILE": "flags/smoke.cfg", "RESULTS_DIR": str(tmp_path / "r"),
                                                **env})
  assert code == 2 and message in out and not (tmp_path / "r").exists(), out


def fake_harness(tmp_path):
  """A copy of run_and_time.sh whose horovodrun (`python -m tf_rn50.horovodrun`) prints its folder and arguments
  instead of training."""
  (tmp_path / "scripts").mkdir()
  shutil.copy(ROOT / "scripts" / "run_and_time.sh", tmp_path / "scripts")
  python = tmp_path / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text('#!/bin/sh\nif [ "$1 $2" = "-m tf_rn50.horovodrun" ]; then shift 2; echo "HOROVODRUN in $PWD: $*"; exit 0; fi\n'
                    f'exec {sys.executable} "$@"\n')
  python.chmod(0o755)
  return tmp_path / "scripts" / "run_and_time.sh"


def test_run_and_time_believes_a_cache_drop_by_its_caller(tmp_path):
  """CACHE_CLEARED=1 (set by run_with_docker.sh after its drop on the host): cache_clear true, logged by
  the harness and passed to the engine, without trying to drop the cache again."""
  code, out = run([fake_harness(tmp_path)], {"FLAGFILE": "flags/smoke.cfg", "RESULTS_DIR": str(tmp_path / "r"),
                                             "CACHE_CLEARED": "1", "SEED": "7"})
  assert code == 0, out
  log = (tmp_path / "r" / "result_1.txt").read_text()
  assert "page cache dropped by the caller just before this run (CACHE_CLEARED=1)" in log, log
  assert re.search(r'^:::MLLOG .*"key": "cache_clear", "value": true', log, re.M), log
  assert f"--flagfile={ROOT}/flags/smoke.cfg --output_dir={tmp_path}/r/run_1 --cache_clear=true --seed=7" in log


def test_run_and_time_uses_a_given_seed_for_every_run(tmp_path):
  code, out = run([fake_harness(tmp_path)], {"FLAGFILE": "flags/smoke.cfg", "RESULTS_DIR": str(tmp_path / "r"),
                                             "SEED": "7", "NEXP": "2", "CLEAR_CACHES": "0"})
  assert code == 0 and "all 2 runs use SEED=7; an MLPerf result set needs a seed per run" in out, out
  assert re.findall(r"--seed=(\d+)", out) == ["7", "7"], out


RESULT_LINE = re.compile(r"^RESULT,IMAGE_CLASSIFICATION,,\d+,[^,]*,\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [AP]M$", re.M)


def test_run_and_time_numbers_its_runs_and_draws_a_seed_for_each_from_any_folder(tmp_path):
  """NEXP=2 started from another folder, with paths relative to it, into a results folder that holds an earlier
  run's result_1.txt: the runs become result_2 and result_3, each with its own seed, and the ranks start in the
  clone (our flagfiles include flags/nf5488.cfg from there) with the caller's paths made absolute."""
  clone, caller = tmp_path / "clone", tmp_path / "elsewhere"
  clone.mkdir()
  (caller / "results").mkdir(parents=True)
  (caller / "results" / "result_1.txt").write_text("an earlier run\n")
  (caller / "mine.cfg").write_text("--flagfile=flags/nf5488.cfg\n")
  code, out = run([fake_harness(clone)], {"FLAGFILE": "mine.cfg", "DATADIR": "data", "RESULTS_DIR": "results",
                                          "NEXP": "2", "CLEAR_CACHES": "0"}, cwd=caller)
  assert code == 0, out
  assert (caller / "results" / "result_1.txt").read_text() == "an earlier run\n"     # never overwritten
  seeds = []
  for trial, n in ((1, 2), (2, 3)):
    log = (caller / "results" / f"result_{n}.txt").read_text()
    assert log.startswith(f"Beginning trial {trial} of 2\npage cache not dropped (CLEAR_CACHES=0)\n"), log
    assert re.search(r'^:::MLLOG .*"key": "cache_clear", "value": false', log, re.M), log
    assert "STARTING TIMING RUN AT " in log and RESULT_LINE.search(log), log
    (launched,) = re.findall("^HOROVODRUN .*", log, re.M)
    seeds.append(int(re.search(r"--seed=(\d+) ", launched)[1]))
    assert launched == (f"HOROVODRUN in {clone}: -np 1 -H localhost:1 --gloo {clone}/.venv/bin/python -m tf_rn50.main "
                        f"--flagfile={caller}/mine.cfg --output_dir={caller}/results/run_{n} --cache_clear=false "
                        f"--seed={seeds[-1]} --data_dir={caller}/data"), log
  assert seeds[0] != seeds[1], seeds   # drawn from 2**31 values
  assert RESULT_LINE.search(out) and out.count("Beginning trial") == 2, out


def test_run_and_time_tries_to_drop_the_page_cache_and_logs_what_happened(tmp_path):
  """By default: a drop when this host lets us (root, not in a container), and cache_clear says which."""
  code, out = run([fake_harness(tmp_path)], {"FLAGFILE": "flags/smoke.cfg", "RESULTS_DIR": str(tmp_path / "r")})
  assert code == 0, out
  log = (tmp_path / "r" / "result_1.txt").read_text()
  cleared = re.search(r'^:::MLLOG .*"key": "cache_clear", "value": (true|false)', log, re.M)[1]
  said = "page cache dropped\n" if cleared == "true" else "page cache not dropped (needs root on the host)\n"
  assert said in log and f"--cache_clear={cleared} " in log, log


# --- launch.sh and slurm.sbatch -------------------------------------------------------------

def launch_dry(*args, env=None):
  code, out = run(["scripts/launch.sh", "--dry-run", *args], env)
  assert code == 0, out
  return out, out.strip().splitlines()[-1]


def test_launch_local_dry_run(tmp_path):
  flagfile = tmp_path / "x.cfg"
  flagfile.write_text("")
  out, cmd = launch_dry("--hosts", "localhost:2", "--flagfile", str(flagfile))
  assert cmd == (f"+ horovodrun -np 2 -H localhost:2 --gloo {ROOT}/scripts/bind.sh "
                 f"python -m tf_rn50.main --flagfile={flagfile}"), cmd
  assert "HOROVOD_FUSION_THRESHOLD=67108864" in out and "HOROVOD_CYCLE_TIME=0.1" in out
  assert "HIERARCHICAL" not in out, "one host needs no hierarchical allreduce"


def test_launch_hvd_two_nodes_dry_run(tmp_path):
  flagfile = tmp_path / "x.cfg"
  flagfile.write_text("")
  out, cmd = launch_dry("--hosts", "n1:8,n2:8", "--iface", "ib0", "--flagfile", str(flagfile),
                        "--", "--output_dir=/results/r1")
  assert cmd.startswith("+ horovodrun -np 16 -H n1:8,n2:8 --gloo --network-interface ib0 "), cmd
  assert cmd.endswith(f"--flagfile={flagfile} --output_dir=/results/r1"), cmd
  assert "NCCL_SOCKET_IFNAME=ib0" in out
  assert "HIERARCHICAL" not in out, "Horovod's hierarchical allreduce needs MPI, not Gloo"


def test_launch_mpi_two_nodes_dry_run(tmp_path):
  flagfile = tmp_path / "x.cfg"
  flagfile.write_text("")
  out, cmd = launch_dry("--mode", "mpi", "--hosts", "n1:8,n2:8", "--flagfile", str(flagfile))
  assert cmd.startswith("+ mpirun -np 16 -H n1:8,n2:8 --bind-to none "), cmd
  for name in ["HOROVOD_FUSION_THRESHOLD", "HOROVOD_CYCLE_TIME", "HOROVOD_HIERARCHICAL_ALLREDUCE",
               "OMPI_MCA_btl", "PATH"]:
    assert f"-x {name} " in cmd, f"mpirun does not forward {name}: {cmd}"
  assert "HOROVOD_HIERARCHICAL_ALLREDUCE=1" in out and "OMPI_MCA_btl=^openib" in out


def test_launch_slurm_dry_run(tmp_path):
  flagfile = tmp_path / "x.cfg"
  flagfile.write_text("")
  out, cmd = launch_dry("--mode", "slurm", "--nodes", "2", "--gpus", "8", "--flagfile", str(flagfile))
  assert cmd == ("+ sbatch --nodes 2 --ntasks-per-node 8 --gpus-per-node 8 --time 01:00:00 "
                 "--job-name tf_rn50 --export ALL scripts/slurm.sbatch"), cmd
  assert f"FLAGFILE={flagfile}" in out


def test_launch_caller_env_wins(tmp_path):
  flagfile = tmp_path / "x.cfg"
  flagfile.write_text("")
  out, _ = launch_dry("--hosts", "localhost:1", "--flagfile", str(flagfile),
                      env={"HOROVOD_CYCLE_TIME": "5"})
  assert "HOROVOD_CYCLE_TIME=5   # from the caller's environment" in out, out


@pytest.mark.parametrize("args, message", [
    (["--hosts", "localhost:2"], "--flagfile is required"),
    (["--hosts", "localhost:2", "--flagfile", "flags/no_such.cfg"], "not found"),
    (["--hosts", "localhost", "--flagfile", "requirements.txt"], "bad host"),
    (["--mode", "slurm", "--nodes", "2", "--flagfile", "requirements.txt"], "needs --nodes N --gpus G"),
    (["--mode", "mpi", "--nodes", "2", "--gpus", "8", "--flagfile", "requirements.txt"], "needs --hosts"),
    (["--mode", "pbs", "--hosts", "a:1", "--flagfile", "requirements.txt"], "must be hvd, mpi or slurm"),
])
def test_launch_rejects_bad_arguments(args, message):
  code, out = run(["scripts/launch.sh", "--dry-run", *args])
  assert code == 2 and message in out, out


def fake_tool(tmp_path, name, body):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  tool = bin_dir / name
  tool.write_text("#!/bin/sh\n" + body)
  tool.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


def test_slurm_sbatch_runs_srun(tmp_path):
  path = fake_tool(tmp_path, "srun", 'echo "SRUN $*"\n')
  code, out = run(["scripts/slurm.sbatch"], {"PATH": path, "FLAGFILE": "flags/nf5488_2node.cfg",
                                             "EXTRA_ARGS": "--seed=7 --output_dir=/results/r1",
                                             "SLURM_SUBMIT_DIR": str(ROOT)})
  assert code == 0, out
  assert (f"SRUN --kill-on-bad-exit=1 --cpu-bind=none {ROOT}/scripts/bind.sh python -m tf_rn50.main "
          "--flagfile=flags/nf5488_2node.cfg --seed=7 --output_dir=/results/r1") in out, out


def test_slurm_sbatch_container_mounts(tmp_path):
  path = fake_tool(tmp_path, "srun", 'echo "SRUN $*"\n')
  code, out = run(["scripts/slurm.sbatch"], {"PATH": path, "FLAGFILE": "flags/x.cfg", "CONT": "img",
                                             "DATADIR": "/d", "LOGDIR": "/l", "SLURM_SUBMIT_DIR": str(ROOT)})
  assert code == 0, out
  assert "--container-image=img --container-mounts=/d:/data:ro,/l:/results" in out, out


def test_slurm_sbatch_requires_flagfile(tmp_path):
  path = fake_tool(tmp_path, "srun", 'echo "SRUN $*"\n')
  code, out = run(["scripts/slurm.sbatch"], {"PATH": path})
  assert code != 0 and "FLAGFILE is not set" in out and "SRUN" not in out, out


# --- bind.sh --------------------------------------------------------------------------------

def numa_nodes_here():
  return len(list(pathlib.Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1


@pytest.mark.skipif(numa_nodes_here() > 1, reason="this host has several NUMA nodes: bind.sh binds here")
@pytest.mark.parametrize("env", [{}, {"HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2"}])
def test_bind_is_a_noop_on_one_numa_node(env):
  code, out = run(["scripts/bind.sh", "sh", "-c", "echo ran with $# args", "x", "a b", "c"], env)
  assert code == 0 and out.strip() == "ran with 2 args", out
  code, out = run(["scripts/bind.sh", "--dry-run", "true"], env)
  assert "no binding" in out and out.strip().endswith("exec: true"), out


def test_bind_passes_the_exit_status():
  code, _ = run(["scripts/bind.sh", "sh", "-c", "exit 3"])
  assert code == 3


FAKE_2X64 = {"BIND_NUMA_NODES": "2", "BIND_CORES": "128", "BIND_THREADS_PER_CORE": "1"}


@pytest.mark.parametrize("launcher", [("HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),
                                      ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
                                      ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE")])
def test_bind_eight_ranks_on_two_sockets_of_64_cores(launcher):
  rank_var, size_var = launcher
  for rank in range(8):
    env = {**FAKE_2X64, rank_var: str(rank), size_var: "8"}
    code, out = run(["scripts/bind.sh", "--dry-run", "python", "-m", "tf_rn50.main"], env)
    assert code == 0, out
    want = (f"exec: numactl --physcpubind={16 * rank}-{16 * rank + 15} --membind={rank // 4} "
            "-- python -m tf_rn50.main")
    assert out.strip() == want, (rank, out)


def test_bind_adds_hyperthread_siblings():
  env = {**FAKE_2X64, "BIND_THREADS_PER_CORE": "2", "HOROVOD_LOCAL_RANK": "5", "HOROVOD_LOCAL_SIZE": "8"}
  code, out = run(["scripts/bind.sh", "--dry-run", "true"], env)
  assert code == 0 and out.strip() == "exec: numactl --physcpubind=80-95,208-223 --membind=1 -- true", out


def test_bind_execs_numactl_when_present(tmp_path):
  path = fake_tool(tmp_path, "numactl", 'echo "NUMACTL $*"\nwhile [ "$1" != -- ]; do shift; done; shift\nexec "$@"\n')
  env = {**FAKE_2X64, "PATH": path, "OMPI_COMM_WORLD_LOCAL_RANK": "7", "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}
  code, out = run(["scripts/bind.sh", "sh", "-c", "echo child ran"], env)
  assert code == 0, out
  assert out.splitlines() == ["NUMACTL --physcpubind=112-127 --membind=1 -- sh -c echo child ran",
                              "child ran"], out


@pytest.mark.parametrize("env, message", [
    ({"BIND": "0"}, "BIND=0"),
    ({"HOROVOD_LOCAL_RANK": "0"}, "ranks per host unknown"),
    ({"HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "256"}, "fewer than one core"),
])
def test_bind_skips_with_a_reason(env, message):
  code, out = run(["scripts/bind.sh", "--dry-run", "true"], {**FAKE_2X64, **env})
  assert code == 0 and message in out and "numactl" not in out, out


def test_bind_rejects_rank_beyond_size():
  code, out = run(["scripts/bind.sh", "true"], {**FAKE_2X64, "HOROVOD_LOCAL_RANK": "8",
                                                "HOROVOD_LOCAL_SIZE": "8"})
  assert code == 2 and "local rank 8" in out, out


# --- multi-node flagfiles -------------------------------------------------------------------

def test_every_multi_node_flagfile_is_known_and_documented():
  found = {p.name for p in (ROOT / "flags").glob("*node*.cfg")}
  assert found == set(MULTI_NODE_FLAGFILES), f"add new flagfiles to MULTI_NODE_FLAGFILES: {found}"
  for name in found:
    lines = (ROOT / "flags" / name).read_text().splitlines()
    header = "\n".join(l for l in lines if l.startswith("#"))
    flags = [l for l in lines if l.strip() and not l.startswith("#")]
    assert lines[0].startswith("# Runs:"), name
    for needed in ["scripts/launch.sh", f"--flagfile flags/{name}", "Expect:", "Time:"]:
      assert needed in header, f"{name}: header lacks {needed!r}"
    assert flags[0] == "--flagfile=flags/nf5488.cfg", f"{name} must start from the seed's flagfile"


def rcps():
  import mlperf_logging
  path = (pathlib.Path(mlperf_logging.__file__).parent / "rcp_checker" / "training_4.0.0"
          / "rcps_resnet.json")
  return {v["BS"]: v for v in json.loads(path.read_text()).values()}


PARSE = """
import json, sys
from absl import flags
from tf_rn50 import flags as tf_flags
F = flags.FLAGS
F(["x", "--flagfile=" + sys.argv[1], "--data_backend=synthetic", "--train_examples=1281167",
   "--eval_examples=50000"])
plan = tf_flags.make_plan(int(sys.argv[2]))
print(json.dumps({"batch": plan.global_batch_size, "lr": F.base_lr, "warmup": F.warmup_epochs,
                  "momentum": F.momentum, "wd": F.weight_decay, "epochs": F.train_epochs,
                  "evals": plan.eval_epochs, "per_rank": F.batch_size}))
"""


@pytest.mark.parametrize("name, ranks", sorted(MULTI_NODE_FLAGFILES.items()))
def test_multi_node_flagfile_matches_an_rcp(name, ranks):
  code, out = run([sys.executable, "-c", PARSE, f"flags/{name}", str(ranks)])
  assert code == 0, out
  got = json.loads(out.strip().splitlines()[-1])
  ref = rcps().get(got["batch"])
  assert ref, f"{name}: global batch {got['batch']} has no MLPerf reference convergence point"
  hp = ref["Hyperparams"]
  assert got["lr"] == pytest.approx(hp["opt_base_learning_rate"])
  assert got["warmup"] == pytest.approx(hp["opt_learning_rate_warmup_epochs"])
  assert got["momentum"] == pytest.approx(hp["opt_momentum"])
  assert got["wd"] == pytest.approx(hp["opt_weight_decay"])
  assert got["per_rank"] == hp["model_bn_span"], "BN span (per-GPU batch) differs from the RCP's"
  epochs = sorted(ref["Epochs to converge"])
  median = epochs[len(epochs) // 2]
  last_eval = max(got["evals"])
  assert median <= last_eval <= got["epochs"], (
      f"{name}: last eval at epoch {last_eval}, RCP median convergence {median}, {got['epochs']} epochs")


# --- the real local launch ------------------------------------------------------------------

def test_launch_smoke_real(tmp_path):
  """scripts/launch.sh --hosts localhost:2 --flagfile flags/smoke.cfg for real: horovodrun --gloo -> bind.sh ->
  2 training ranks in one Horovod job. The `python` launch.sh starts, first on PATH, is a probe that prints what
  each rank was handed, then execs the venv's python."""
  probe = tmp_path / "bin" / "python"
  probe.parent.mkdir()
  probe.write_text('#!/bin/sh\necho "PROBE rank=$HOROVOD_RANK size=$HOROVOD_SIZE local=$HOROVOD_LOCAL_RANK '
                   f'fusion=$HOROVOD_FUSION_THRESHOLD args=$*"\nexec {sys.executable} "$@"\n')
  probe.chmod(0o755)
  out_dir = tmp_path / "run"
  env = {"PATH": f"{probe.parent}:{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
  code, out = run(["scripts/launch.sh", "--hosts", "localhost:2", "--flagfile", "flags/smoke.cfg",
                   "--", f"--output_dir={out_dir}", "--seed=3"], env, timeout=150)
  assert code == 0, out[-5000:]
  for rank in (0, 1):
    want = (f"[{rank}]<stdout>:PROBE rank={rank} size=2 local={rank} fusion=67108864 "
            f"args=-m tf_rn50.main --flagfile=flags/smoke.cfg --output_dir={out_dir} --seed=3")
    assert want in out, out[-3000:]
  log = (out_dir / "mlperf.log").read_text()
  assert ":::MLLOG" in log and '"key": "run_stop"' in log, log[-2000:]
  # The engine got the flags, and Horovod counted both ranks: 2 x --batch_size=4.
  assert '"key": "seed", "value": 3,' in log and '"key": "global_batch_size", "value": 8,' in log, log[-2000:]
