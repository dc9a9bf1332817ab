"""Horovod for real: 2 ranks agree with 1, a dying rank ends the job, a killed run resumes where an
uninterrupted run would be, and bad output or data folders stop the run before run_start."""
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from launch import HOROVODRUN, REPO, env, main_command, run_main

TINY_SYNTHETIC = ["--flagfile=flags/smoke.cfg", "--train_examples=4000", "--train_epochs=100"]


def hvd_run(ranks, *command, timeout=300):
  return subprocess.run([str(HOROVODRUN), "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *command],
                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                        env=env())


def test_two_ranks_on_halves_match_one_rank_on_the_whole_batch(tmp_path):
  weights = {}
  for ranks in (1, 2):
    out = tmp_path / f"{ranks}.npz"
    result = hvd_run(ranks, sys.executable, "tests/step_worker.py", str(out), "fp32")
    assert result.returncode == 0, result.stdout[-3000:]
    with np.load(out) as saved:
      weights[ranks] = [saved[k] for k in sorted(saved.files)]
  for one, two in zip(weights[1], weights[2]):
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
  assert any(np.abs(w).sum() > 0 for w in weights[1])


def test_one_rank_dying_ends_every_rank_with_an_error(tmp_path):
  job = subprocess.Popen(main_command(*TINY_SYNTHETIC, f"--output_dir={tmp_path}", ranks=2), cwd=REPO, env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = []
  for line in job.stdout:                                     # wait until training is under way
    output.append(line)
    if "step 2/" in line:
      break
  else:
    pytest.fail("".join(output)[-3000:])
  ranks = [p for p in psutil.Process(job.pid).children(recursive=True) if "tf_rn50.main" in " ".join(p.cmdline())]
  victim = next(p for p in ranks if p.environ().get("HOROVOD_RANK") == "1")
  killed_at = time.time()
  victim.send_signal(signal.SIGKILL)
  output.extend(job.stdout)
  status = job.wait(timeout=60)
  text = "".join(output)
  assert time.time() - killed_at < 60
  assert status != 0, text[-3000:]
  assert "Process 1 exit with status code" in text and "Terminating remaining workers" in text, text[-3000:]
  assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)


@pytest.fixture(scope="module")
def tiny_jpegs(tmp_path_factory):
  """4 classes x 6 train / 3 val real JPEGs, RecordIO."""
  out = tmp_path_factory.mktemp("tiny")
  made = subprocess.run([sys.executable, "scripts/make_demo_data.py", "--out", str(out), "--classes", "4",
                         "--train_per_class", "6", "--val_per_class", "3"], cwd=REPO, env=env(),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
  assert made.returncode == 0, made.stdout[-3000:]
  return out / "recordio"


def resume_flags(data, output_dir):
  # evals (and checkpoints) after epochs 2 and 4; a target no 12-image eval this early reaches
  return ["--flagfile=flags/demo_cpu.cfg", f"--data_dir={data}", "--data_backend=tfdata", "--train_examples=24",
          "--eval_examples=12", "--batch_size=4", "--train_epochs=4", "--warmup_epochs=1", "--eval_period=2",
          "--eval_offset=1", "--target_accuracy=1.0", f"--output_dir={output_dir}", "--log_every=1"]


def test_a_killed_run_resumes_at_its_last_checkpoint_like_an_uninterrupted_run(tiny_jpegs, tmp_path):
  whole = run_main(*resume_flags(tiny_jpegs, tmp_path / "whole"))
  assert whole.returncode == 1 and '"status": "aborted"' in whole.stdout, whole.stdout[-3000:]

  cut = tmp_path / "cut"
  job = subprocess.Popen(main_command(*resume_flags(tiny_jpegs, cut)), cwd=REPO, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (cut / "checkpoints" / "ckpt-epoch002.npz").exists():
    assert job.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
    time.sleep(0.1)
  job.kill()                                                   # somewhere in epoch 3
  job.wait()
  assert not (cut / "checkpoints" / "ckpt-epoch004.npz").exists()

  resumed = run_main(*resume_flags(tiny_jpegs, cut), "--resume")
  assert "resuming after epoch 2" in resumed.stdout, resumed.stdout[-3000:]
  assert '"first_epoch_num": 3, "epoch_count": 2' in resumed.stdout
  assert "epoch 3/4  step 2/6" in resumed.stdout and "epoch 1/4" not in resumed.stdout
  with np.load(whole_ckpt := tmp_path / "whole" / "checkpoints" / "ckpt-epoch004.npz") as a, \
       np.load(cut / "checkpoints" / "ckpt-epoch004.npz") as b:
    assert a.files == b.files and int(b["epochs_done"]) == 4
    for key in a.files:
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} of {whole_ckpt}")


@pytest.mark.parametrize("flag, message", [
    ("--output_dir=/proc/tf_rn50_cannot_write_here", "cannot write to /proc/tf_rn50_cannot_write_here"),
    ("--data_dir=/nonexistent/imagenet", "/nonexistent/imagenet"),
])
def test_bad_folders_stop_the_run_before_run_start(flag, message, tmp_path):
  result = run_main("--flagfile=flags/demo_cpu.cfg", f"--output_dir={tmp_path}", flag, timeout=120)
  assert result.returncode != 0
  assert message in result.stdout, result.stdout[-3000:]
  assert '"key": "run_start"' not in result.stdout
