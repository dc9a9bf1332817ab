"""Fixtures shared by the test files: the seed's log, and the README's demo run (test_demo_run checks the run,
test_export what a user does after it)."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from launch import DEMO_SEED, REPO, demo, env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import summarize  # noqa: E402  (scripts/ is not a package)


@pytest.fixture
def seed_log():
  """The seed's MLPerf log, which lives in the project's shared/ folder beside the clone."""
  if not summarize.SEED_LOG.is_file():
    pytest.skip(f"the seed's log is not at {summarize.SEED_LOG} (shared/reference/ beside this clone)")
  return summarize.SEED_LOG


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
  data = tmp_path_factory.mktemp("demo") / "data"
  made = subprocess.run([sys.executable, "scripts/make_demo_data.py", "--out", str(data)], cwd=REPO, env=env(),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
  assert made.returncode == 0, made.stdout[-3000:]
  # demo.sh remakes data whose made_by is not the sha256 of today's make_demo_data.py
  made_by = hashlib.sha256((REPO / "scripts/make_demo_data.py").read_bytes()).hexdigest()
  assert (data / "made_by").read_text() == made_by + "\n"
  return data


@pytest.fixture(scope="session")
def demo_run(demo_data, tmp_path_factory):
  """The demo after an earlier one: run_1 holds a log and a checkpoint, so this run is run_2. Returns the
  CompletedProcess and the results folder."""
  results = tmp_path_factory.mktemp("results")
  (results / "run_1" / "checkpoints").mkdir(parents=True)
  (results / "run_1" / "checkpoints" / "ckpt-epoch007.npz").write_bytes(b"an earlier run's checkpoint")
  (results / "run_1" / "mlperf.log").write_text("an earlier run's log\n")
  return demo(demo_data, results, SEED=str(DEMO_SEED)), results
