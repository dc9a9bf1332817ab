"""MLPerf rules around the engine: the official compliance checker really checks (the seed's log
passes ruleset 0.7.0 and fails 4.0.0), flags/nf5488.cfg agrees with the batch-3264 reference
convergence point shipped in mlperf_logging. The result files of scripts/run_and_time.sh are tested in
tests/test_ops.py (a fake horovodrun) and tests/test_demo_run.py (the real engine).
"""
import importlib.resources
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NF5488_CFG = REPO / "flags/nf5488.cfg"
IMAGENET_TRAIN = 1_281_167
SEED_RANKS = 8  # 1 node x 8 A100: global batch 8 x 408 = 3264


def run_checker(log, ruleset, tmp_path):
  """The official checker as a user runs it; its own log goes to tmp_path, not the working dir."""
  return subprocess.run(
      [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset",
       ruleset, "--log_output", str(tmp_path / f"checker_{ruleset}.log"), str(log)],
      capture_output=True, text=True)


def test_seed_log_passes_ruleset_0_7_0(seed_log, tmp_path):
  out = run_checker(seed_log, "0.7.0", tmp_path)
  # Success: exit 0, and on stderr (python logging) the rule files it applied, then SUCCESS.
  assert out.returncode == 0, out.stderr
  assert "Compliance checks: training_0.7.0/closed_resnet_lars.yaml" in out.stderr
  assert out.stderr.rstrip().endswith("INFO - SUCCESS")
  assert "** Logging output also at" in out.stdout


def test_seed_log_fails_ruleset_4_0_0(seed_log, tmp_path):
  out = run_checker(seed_log, "4.0.0", tmp_path)
  # Failure: exit 1, a WARNING per broken rule, then FAILED.
  assert out.returncode == 1
  assert "Required EXACTLY_ONE occurrence of 'gradient_accumulation_steps' but found 0" in out.stderr
  assert out.stderr.rstrip().endswith("ERROR - FAILED")


def test_checker_rejects_a_log_that_never_reaches_the_target(seed_log, tmp_path):
  lines = seed_log.read_text(encoding="latin-1").splitlines(keepends=True)
  short = tmp_path / "short.txt"
  short.write_text("".join(l for l in lines if '"value": 0.76058' not in l), encoding="latin-1")
  out = run_checker(short, "0.7.0", tmp_path)
  assert out.returncode == 1
  assert "Failed checks for eval_accuracy : v['value'] >= 0.7590" in out.stderr


def read_flagfile(path):
  """{name: value} of an absl flagfile's `--name=value` lines, nested --flagfile= included."""
  values = {}
  for line in Path(path).read_text().splitlines():
    name, eq, value = line.strip().removeprefix("--").partition("=")
    if not line.strip().startswith("--") or not eq:
      continue  # comments, blank lines, bare booleans
    if name == "flagfile":
      values.update(read_flagfile(REPO / value))
    else:
      values[name] = value
  return values


@pytest.fixture
def nf5488():
  return read_flagfile(NF5488_CFG)


def read_rcp(ruleset, batch=3264):
  """A resnet reference convergence point of the installed mlperf_logging."""
  path = importlib.resources.files("mlperf_logging") / f"rcp_checker/training_{ruleset}/rcps_resnet.json"
  (record,) = [r for r in json.loads(path.read_text()).values() if r["BS"] == batch]
  return record


@pytest.fixture
def rcp():
  return read_rcp("4.0.0")


def test_nf5488_hyperparameters_match_the_rcp(nf5488, rcp):
  hp = rcp["Hyperparams"]
  assert rcp["BS"] == int(nf5488["batch_size"]) * SEED_RANKS == 3264
  assert hp["optimizer"] == "lars"
  assert float(nf5488["base_lr"]) == hp["opt_base_learning_rate"] == 10.5
  assert float(nf5488["warmup_epochs"]) == hp["opt_learning_rate_warmup_epochs"] == 2
  assert float(nf5488["momentum"]) == hp["opt_momentum"] == 0.9
  assert float(nf5488["weight_decay"]) == hp["opt_weight_decay"] == 5e-5
  # The RCP's 15 reference runs converged in 34-36(37) epochs; 37 scheduled epochs cover them.
  assert max(rcp["Epochs to converge"]) <= int(nf5488["train_epochs"]) == 37


def test_rcp_decay_steps_are_37_epochs_of_samples_over_the_global_batch(nf5488, rcp):
  epochs, batch = int(nf5488["train_epochs"]), rcp["BS"]
  # The 1.0.0 RCP holds what the seed's MXNet code logged as "decay steps": the epoch count, 37.
  assert read_rcp("1.0.0")["Hyperparams"]["opt_learning_rate_decay_steps"] == epochs == 37
  # From 1.1.0 on it is converted to steps: 37 x 1,281,167 / 3264 = 14523.03, rounded down.
  assert math.floor(epochs * IMAGENET_TRAIN / batch) == rcp["Hyperparams"]["opt_learning_rate_decay_steps"] == 14523
  # Ours rounds up per epoch (393 steps, the short shards padded): 37 x 393 = 14541, 18 more.
  steps_per_epoch = math.ceil(math.ceil(IMAGENET_TRAIN / SEED_RANKS) / int(nf5488["batch_size"]))
  assert (steps_per_epoch, epochs * steps_per_epoch) == (393, 14541)
  assert epochs * steps_per_epoch - 14523 == round(epochs * (steps_per_epoch - IMAGENET_TRAIN / batch)) == 18
