"""Runs tf_rn50.main as a user would, in its own processes: one plain Python process, or N Horovod
ranks through `horovodrun --gloo` on this host (as scripts/run_and_time.sh starts it: tf_rn50.horovodrun);
and the README's demo, scripts/demo.sh."""
import contextlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def horovodrun(ranks, *command):
  """`command` as `ranks` Horovod ranks on this host (Gloo)."""
  return [sys.executable, "-m", "tf_rn50.horovodrun", "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo",
          *command]


def main_command(*flags, ranks=None):
  """The command line of tf_rn50.main with `flags`; under horovodrun when `ranks` is given."""
  command = [sys.executable, "-m", "tf_rn50.main", *flags]
  return horovodrun(ranks, *command) if ranks else command


def run_main(*flags, ranks=None, timeout=600):
  """Runs to the end; returns the CompletedProcess with stdout and stderr merged into .stdout."""
  return subprocess.run(main_command(*flags, ranks=ranks), cwd=REPO, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env())


def env():
  # PYTHONPATH: scripts and workers started by path import this checkout's tf_rn50, not the venv's editable one.
  path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


@contextlib.contextmanager
def in_background(command, log=None):
  """Starts `command` from the clone (stdout and stderr to the file `log`, else discarded) while the block runs
  another; kills it on leaving the block, a no-op once it has ended."""
  with open(log, "w") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
    job = subprocess.Popen(command, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT)
  try:
    yield job
  finally:
    job.kill()


# Through demo.sh and run_and_time.sh, over nf5488.cfg's --seed=1; reached 0.9 at epoch 7 on an Intel Xeon.
DEMO_SEED = 139267029


def demo(data, results, **extra_env):
  """scripts/demo.sh on `data`, its results in `results`; stdout and stderr merged into .stdout."""
  return subprocess.run(["scripts/demo.sh"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=900, env={**env(), "DEMO_DATA": str(data), "RESULTS_DIR": str(results), **extra_env})
