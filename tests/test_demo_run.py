"""The README's first command, scripts/demo.sh, on the bundled demo data: one Horovod rank, DALI on RecordIO,
flags/demo_cpu.cfg (the NF5488 hyperparameters and cadence, shrunk), through scripts/run_and_time.sh. The run
must reach the target on the MLPerf cadence; the terminal shows a readable view, the result file and
mlperf.log the whole MLPerf log, which must pass the official checker under the seed's ruleset (0.7.0) and
the last ResNet one (4.0.0)."""
import json
import re
import subprocess
import sys

import pytest

from launch import DEMO_SEED, demo

TF_NOISE = "Unable to register cu"   # TF's CUDA build logs this for cuFFT, cuDNN and cuBLAS without a GPU


def events(text):
  return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in text.splitlines() if ":::MLLOG {" in line]


def test_the_demo_reaches_the_target_on_the_mlperf_cadence(demo_run):
  run, results = demo_run
  assert run.returncode == 0, run.stdout[-5000:]
  log = events((results / "run_2" / "mlperf.log").read_text())
  accuracy = [(e["metadata"]["epoch_num"], e["value"]) for e in log if e["key"] == "eval_accuracy"]
  assert [epoch for epoch, _ in accuracy] == list(range(3, 4 * len(accuracy), 4))      # 3, 7, 11
  assert accuracy[-1][1] >= 0.759 and all(value < 0.759 for _, value in accuracy[:-1])
  assert log[-1]["key"] == "run_stop" and log[-1]["metadata"]["status"] == "success"
  keys = [e["key"] for e in log]
  assert keys.index("init_stop") < keys.index("run_start") < keys.index("block_start")
  hyper = {e["key"]: e["value"] for e in log}
  assert (hyper["global_batch_size"], hyper["opt_name"], hyper["lars_opt_end_learning_rate"]) == (32, "lars", 0.0001)


def test_the_terminal_shows_the_run_and_the_result_file_keeps_every_line(demo_run):
  run, results = demo_run
  terminal, kept = run.stdout, (results / "result_2.txt").read_text()
  for shown in ["plan: ResNet-50 on 400 train / 330 val images at 32x32, 1 rank x 32 images a step, 13 steps an epoch",
                "evaluated after epochs 3, 7, 11", "\nepoch 1/12  step 10/13  loss ", "\nepoch 3: eval top-1 ",
                "\nrun_stop: success", "\nRESULT,IMAGE_CLASSIFICATION,,", f"every line:  {results}/result_2.txt",
                f"MLPerf log: {results}/run_2/mlperf.log", f"plot: {results}/accuracy.png",
                f"--logdir {results}/run_2/tensorboard"]:
    assert shown in terminal, f"{shown!r} not in:\n{terminal}"
  assert "as images/, recordio/ and tfrecord/" not in terminal, terminal   # its made_by matched: not remade
  assert ":::MLLOG" not in terminal and TF_NOISE not in terminal and "<stdout>" not in terminal, terminal
  assert len(terminal.splitlines()) < 60, terminal   # the run, its summary, the export and two top-5 lists
  assert f"\nseed: {DEMO_SEED} (SEED={DEMO_SEED} repeats the run)\n" in terminal, terminal
  assert f'"key": "seed", "value": {DEMO_SEED},' in (results / "run_2" / "mlperf.log").read_text()
  # The harness and the engine log the same cache_clear: false, as the demo leaves the page cache alone.
  assert "\npage cache not dropped (CLEAR_CACHES=0)\n" in kept
  assert re.search(r'^:::MLLOG .*"key": "cache_clear", "value": false', kept, re.M), kept[:3000]
  assert '"key": "cache_clear", "value": false' in (results / "run_2" / "mlperf.log").read_text()
  # The result file holds rank 0's whole MLPerf log, line for line as mlperf.log has it.
  ranked = [line.split("[0]<stdout>:", 1)[1] for line in kept.splitlines() if line.startswith("[0]<stdout>::::MLLOG")]
  assert ranked == (results / "run_2" / "mlperf.log").read_text().splitlines()
  assert TF_NOISE in kept   # the result file is not filtered


def test_repeated_demos_keep_the_newest_checkpoints_only(demo_run):
  run, results = demo_run
  assert not (results / "run_1" / "checkpoints").exists()
  assert (results / "run_1" / "mlperf.log").read_text() == "an earlier run's log\n"
  assert len(list((results / "run_2" / "checkpoints").glob("*.index"))) == 1   # --keep_checkpoints=1


def test_a_failing_run_shows_its_error(demo_data, tmp_path):
  run = demo(demo_data, tmp_path, EXTRA_ARGS="--train_examples=401")
  assert run.returncode != 0
  assert f"--train_examples=401 but {demo_data}/recordio holds 400 train examples" in run.stdout, run.stdout
  assert f"the run failed (exit status {run.returncode})" in run.stdout, run.stdout


@pytest.mark.parametrize("ruleset", ["0.7.0", "4.0.0"])
def test_the_demo_log_passes_the_official_checker(demo_run, ruleset, tmp_path):
  run, results = demo_run
  for log in (results / "result_2.txt", results / "run_2" / "mlperf.log"):
    check = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                            "--ruleset", ruleset, "--log_output", str(tmp_path / "checker.log"), str(log)],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, f"{log}:\n{check.stdout[-3000:]}"


def test_the_demo_plot_and_summary(demo_run):
  run, results = demo_run
  plot = results / "accuracy.png"
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
  assert re.search(r"^  success +\d+\.\d\d +(7|11) +[01]\.\d{5} +\d+  result_2\.txt$", run.stdout, re.M), run.stdout
