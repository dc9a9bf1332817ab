"""Fixtures shared by the test files."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import summarize  # noqa: E402  (scripts/ is not a package)


@pytest.fixture
def seed_log():
  """The seed's MLPerf log, which lives in the project's shared/ folder beside the clone."""
  if not summarize.SEED_LOG.is_file():
    pytest.skip(f"the seed's log is not at {summarize.SEED_LOG} (shared/reference/ beside this clone)")
  return summarize.SEED_LOG


TINY_RUN = """# a seconds-long run of the real engine on synthetic data: one training and one eval step; smoke.cfg
# names nf5488.cfg from the clone, and this runs from another folder
--flagfile=flags/smoke.cfg
--data_backend=synthetic
--image_size=32
--batch_size=4
--train_examples=4
--eval_examples=4
--train_epochs=1
--warmup_epochs=0.5
--eval_period=1
--eval_offset=0
--dtype=fp32
--noxla
--seed=1
"""


@pytest.fixture(scope="session")
def timed_runs(tmp_path_factory):
  """scripts/run_and_time.sh as a user runs it, from another folder: two timed runs (NEXP=2) of TINY_RUN, one
  rank each, into a results folder that already holds an earlier run's result_1.txt. One launch of the script
  serves test_ops (each run its own seed) and test_mlperf_rules (the result files). Returns (the results
  folder, the CompletedProcess)."""
  root = tmp_path_factory.mktemp("timed_runs")
  (root / "tiny.cfg").write_text(TINY_RUN)
  results = root / "results"
  results.mkdir()
  (results / "result_1.txt").write_text("an earlier run\n")
  env = {**os.environ, "FLAGFILE": str(root / "tiny.cfg"), "NPROC": "1", "NEXP": "2", "RESULTS_DIR": str(results)}
  done = subprocess.run(["bash", str(REPO / "scripts/run_and_time.sh")], env=env, cwd=root, capture_output=True,
                        text=True, timeout=900)
  return results, done
