"""The whole benchmark on the bundled demo data, as scripts/demo.sh runs it: 2 Horovod ranks, DALI on
RecordIO, flags/demo_cpu.cfg (the NF5488 hyperparameters and cadence, shrunk), through
scripts/run_and_time.sh. The run must reach the target on the MLPerf cadence, and its log must pass the
official checker under the seed's ruleset (0.7.0) and the last ResNet one (4.0.0)."""
import json
import re
import subprocess
import sys

import pytest

from launch import REPO, env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  made = subprocess.run([sys.executable, "scripts/make_demo_data.py", "--out", str(root / "data")], cwd=REPO,
                        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
  assert made.returncode == 0, made.stdout[-3000:]
  harness_env = {**env(), "FLAGFILE": "flags/demo_cpu.cfg", "NPROC": "2", "DATADIR": str(root / "data" / "recordio"),
                 "RESULTS_DIR": str(root / "results")}
  run = subprocess.run(["scripts/run_and_time.sh"], cwd=REPO, env=harness_env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900)
  return run, root / "results"


def events(text):
  return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in text.splitlines() if ":::MLLOG {" in line]


def test_the_demo_reaches_the_target_on_the_mlperf_cadence(demo_run):
  run, results = demo_run
  assert run.returncode == 0, run.stdout[-5000:]
  assert re.search(r"^RESULT,IMAGE_CLASSIFICATION,,\d+,", run.stdout, re.M)
  log = events((results / "run_1" / "mlperf.log").read_text())
  accuracy = [(e["metadata"]["epoch_num"], e["value"]) for e in log if e["key"] == "eval_accuracy"]
  assert [epoch for epoch, _ in accuracy] == list(range(3, 4 * len(accuracy), 4))      # 3, 7, 11, ...
  assert accuracy[-1][1] >= 0.759 and all(value < 0.759 for _, value in accuracy[:-1])
  assert log[-1]["key"] == "run_stop" and log[-1]["metadata"]["status"] == "success"
  keys = [e["key"] for e in log]
  assert keys.index("init_stop") < keys.index("run_start") < keys.index("block_start")
  hyper = {e["key"]: e["value"] for e in log}
  assert (hyper["global_batch_size"], hyper["opt_name"], hyper["lars_opt_end_learning_rate"]) == (32, "lars", 0.0001)
  assert "[0]<stdout>:epoch 1/24  step 10/13  loss" in run.stdout     # progress from rank 0 only
  assert "[1]<stdout>:epoch" not in run.stdout and "[1]<stdout>::::MLLOG" not in run.stdout


@pytest.mark.parametrize("ruleset", ["0.7.0", "4.0.0"])
def test_the_demo_log_passes_the_official_checker(demo_run, ruleset, tmp_path):
  run, results = demo_run
  for log in (results / "result_1.txt", results / "run_1" / "mlperf.log"):
    check = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                            "--ruleset", ruleset, "--log_output", str(tmp_path / "checker.log"), str(log)],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, f"{log}:\n{check.stdout[-3000:]}"


def test_summarize_reads_the_demo_result(demo_run, tmp_path):
  run, results = demo_run
  plot = tmp_path / "accuracy.png"
  summary = subprocess.run([sys.executable, "scripts/summarize.py", str(results), "--json", "--plot", str(plot)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
  assert summary.returncode == 0, summary.stderr
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
  text = summary.stdout
  assert '"status": "success"' in text and "result_1.txt" in text, text
