"""The flags as a user meets them: the NF5488 dry run prints REFERENCE.md's plan, and bad values stop
at start with a message that names the flag."""
import json
import subprocess
import sys

import pytest

from launch import REPO, env

W, T = 786, 14541                                         # 2 and 37 epochs of 393 steps


def main(*flags):
  return subprocess.run([sys.executable, "-m", "tf_rn50.main", *flags], cwd=REPO, env=env(), timeout=300,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_nf5488_dry_run_is_the_seed_plan():
  result = main("--flagfile=flags/nf5488.cfg", "--dry_run=8")
  assert result.returncode == 0, result.stderr[-3000:]
  plan = json.loads(result.stdout.strip().splitlines()[-1])
  lr = plan.pop("lr")
  assert len(plan.pop("placement")) == 8                  # tests/test_devices.py checks each entry
  assert plan == {"num_ranks": 8, "global_batch_size": 3264, "steps_per_epoch": 393, "warmup_steps": W,
                  "total_steps": T, "eval_epochs": [3, 7, 11, 15, 19, 23, 27, 31, 35]}
  assert lr.keys() == {"1", str(W), str(W + 1), str(T)}
  assert lr["1"] == pytest.approx(10.5 / W)
  assert lr[str(W)] == pytest.approx(10.5)
  assert lr[str(W + 1)] == pytest.approx(1e-4 + (10.5 - 1e-4) * (1 - 1 / (T - W)) ** 2)
  assert lr[str(T)] == pytest.approx(1e-4)


def test_the_dry_run_scales_with_ranks():
  plan = json.loads(main("--flagfile=flags/nf5488.cfg", "--dry_run=16", "--batch_size=204").stdout.splitlines()[-1])
  assert (plan["global_batch_size"], plan["steps_per_epoch"], plan["total_steps"]) == (3264, 393, T)


def test_the_dry_run_needs_no_tensorflow():
  """The plan comes at once: TensorFlow, Keras and Horovod (~4 s to import) stay out of it."""
  without = ("import runpy, sys; sys.modules.update(dict.fromkeys(['tensorflow', 'keras', 'horovod', 'nvidia'])); "
             "sys.argv[0] = 'tf_rn50.main'; runpy.run_module('tf_rn50.main', run_name='__main__')")
  result = subprocess.run([sys.executable, "-c", without, "--flagfile=flags/nf5488.cfg", "--dry_run=8"], cwd=REPO,
                          env=env(), timeout=300, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.splitlines()[-1])["lr"][str(W)] == pytest.approx(10.5)


@pytest.mark.parametrize("flags, message", [
    (["--eval_offset=4"], "--eval_offset must be smaller than --eval_period"),
    (["--dtype=fp8"], "flag --dtype=fp8"),
    (["--batch_size=0"], "flag --batch_size=0"),
    (["--target_accuracy=1.5"], "--target_accuracy must be in (0, 1]"),
    (["--warmup_epochs=40"], "--warmup_epochs must be smaller than --train_epochs"),
    (["--data_backend=synthetic", "--train_examples=0"], "need --train_examples and --eval_examples"),
    (["--data_dir="], "--data_dir is required"),
    (["--checkpoint=epoch"], "flag --checkpoint=epoch"),
    (["--keep_checkpoints=0"], "flag --keep_checkpoints=0"),
    (["--data_backend=tfdata"], "--data_sampler=dali reads with DALI's readers and needs --data_backend=dali"),
    (["--dali_hw_decoder_load=1.5"], "flag --dali_hw_decoder_load=1.5"),
])
def test_bad_values_stop_at_start_naming_the_flag(flags, message):
  result = main("--flagfile=flags/nf5488.cfg", *flags)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert ":::MLLOG" not in result.stdout
