"""Horovod for real: 2 ranks agree with 1, the production precision (fp16, XLA, loss scaling, fp16
allreduce) on 2 ranks, a dying rank ends the job, a killed run resumes where an uninterrupted run would
be and builds each input pipeline once, and bad output or data folders stop the run before run_start."""
import glob
import json
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from launch import REPO, env, horovodrun, in_background, main_command, run_main

TINY_SYNTHETIC = ["--flagfile=flags/smoke.cfg", "--train_examples=4000", "--train_epochs=100"]


def hvd_run(ranks, *command, timeout=300, **variables):
  return subprocess.run(horovodrun(ranks, *command), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=timeout, env={**env(), **variables})


def weights(folder):
  with np.load(folder / "weights.npz") as saved:
    return {kind: [saved[f"{kind}_{i}"] for i in range(len(saved.files) // 2)] for kind in ("fp32", "fp16")}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
  """One 2-rank run of tests/step_worker.py: the allreduce checks and the fp16 XLA ResNet-50. XLA compiles
  without LLVM's expensive optimizations here: 40-50 s per rank instead of 100-200 s, the same graph."""
  out = tmp_path_factory.mktemp("two_ranks")
  xla_flags = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}
  result = hvd_run(2, sys.executable, "tests/step_worker.py", str(out), timeout=900, **xla_flags)
  assert result.returncode == 0, result.stdout[-3000:]
  return out


def test_two_ranks_on_halves_match_one_rank_on_the_whole_batch(two_ranks):
  import horovod.tensorflow as hvd
  import step_worker
  hvd.init()                                # one rank: this process, no horovodrun (no launch to pay for)
  assert hvd.size() == 1
  one, two = step_worker.allreduce_weights(False), weights(two_ranks)["fp32"]
  for a, b in zip(one, two):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  assert any(np.abs(w).sum() > 0 for w in one)


def test_the_fp16_allreduce_trains_and_agrees_with_the_fp32_allreduce(two_ranks):
  found = weights(two_ranks)
  for fp32, fp16 in zip(found["fp32"], found["fp16"]):
    np.testing.assert_allclose(fp16, fp32, rtol=2e-3, atol=2e-4)   # gradients rounded to fp16: 2^-11 relative
  assert any(not np.array_equal(a, b) for a, b in zip(found["fp32"], found["fp16"]))   # it did compress


def test_fp16_with_xla_trains_resnet50_and_a_step_that_overflows_is_skipped_counted_and_logged(two_ranks):
  """mixed_float16 + XLA + LossScaleOptimizer + the Horovod allreduce on the real ResNet-50 (64x64), two steps,
  the loss scale set to overflow for step 1 only."""
  with open(two_ranks / "fp16.json") as f:
    run = json.load(f)
  assert all(np.isfinite(run["losses"])), run
  assert run["skipped"] == [1, 1], run
  assert run["changed_by_step"] == {"1": False, "2": True}, run   # weights and momenta untouched by step 1
  assert run["step_counter"] == [1, 2], run                       # the skipped step still counts ...
  assert run["next_lr"] == pytest.approx(run["schedule_next_lr"]), run   # ... and spends its LR: no lag
  assert run["checksums"][0] == run["checksums"][1]               # both ranks hold the same weights
  import tensorflow as tf
  scalars = {}
  for path in glob.glob(str(two_ranks / "tensorboard" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  assert scalars["train/skipped_steps"] == {1: 1, 2: 1}
  assert scalars["train/loss_scale"] == {1: pytest.approx(3e38 / 2, rel=1e-6), 2: 1024}
  # the LR logged for step s is the one the optimizer was about to apply after step s - 1
  assert [scalars["train/learning_rate"][s] for s in (1, 2)] == pytest.approx(run["next_lr"][:2])


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
  """4 classes x 4 train / 3 val real JPEGs, RecordIO."""
  out = tmp_path_factory.mktemp("tiny")
  made = subprocess.run([sys.executable, "scripts/make_demo_data.py", "--out", str(out), "--classes", "4",
                         "--train_per_class", "4", "--val_per_class", "3"], cwd=REPO, env=env(),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
  assert made.returncode == 0, made.stdout[-3000:]
  return out / "recordio"


def resume_flags(data, output_dir):
  # evals (and checkpoints) after epochs 2 and 4; a target no 12-image eval this early reaches
  return ["--flagfile=flags/demo_cpu.cfg", f"--data_dir={data}", "--data_backend=dali", "--train_examples=16",
          "--eval_examples=12", "--batch_size=4", "--train_epochs=4", "--warmup_epochs=1", "--eval_period=2",
          "--eval_offset=1", "--target_accuracy=1.0", f"--output_dir={output_dir}", "--log_every=1",
          "--checkpoint=block", "--keep_checkpoints=1"]


# tf_rn50.main, recording in order: iterators made over tf.data datasets ("iter"), each start of a Python
# generator that feeds a pipeline ("generator": tf.data calls it once per pipeline that runs, DALI's or
# tf.data's), and run_start; and at exit, the garbage collector's state.
COUNTING_MAIN = """
import atexit, gc, json, sys
import tensorflow as tf
from tf_rn50 import main, mlperf
events = []
def recorded(name, function):
  def call(*args, **kwargs):
    events.append(name)
    return function(*args, **kwargs)
  return call
from_generator = tf.data.Dataset.from_generator
tf.data.Dataset.from_generator = lambda generator, *a, **k: from_generator(recorded("generator", generator), *a, **k)
tf.data.Dataset.__iter__ = recorded("iter", tf.data.Dataset.__iter__)
start = mlperf.MLPerfLog.start
mlperf.MLPerfLog.start = lambda log, key, *a, **k: (key == "run_start" and events.append(key), start(log, key, *a, **k))
atexit.register(lambda: print("GC_AT_EXIT " + json.dumps([gc.isenabled(), gc.get_freeze_count()]), flush=True))
atexit.register(lambda: print("PIPELINE_EVENTS " + json.dumps(events), flush=True))
sys.argv[0] = "tf_rn50.main"
main.run()
"""


@pytest.fixture(scope="module")
def drill(tiny_jpegs, tmp_path_factory):
  """The drills' runs, 4 epochs of DALI input, evaluated and checkpointed after epochs 2 and 4: the uninterrupted
  run, which counts its pipelines, and a run killed after its first checkpoint, then resumed. The first two start
  together: each spends most of its start-up (tracing) on one core."""
  root = tmp_path_factory.mktemp("drill")
  whole, cut = root / "whole", root / "cut"
  with (in_background([sys.executable, "-c", COUNTING_MAIN, *resume_flags(tiny_jpegs, whole)], root / "whole.txt")
        as whole_job, in_background(main_command(*resume_flags(tiny_jpegs, cut))) as cut_job):
    state = cut / "checkpoints" / "checkpoint"
    deadline = time.time() + 300
    while not (state.exists() and '"ckpt-2"' in state.read_text()):
      assert cut_job.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
      time.sleep(0.1)
    cut_job.kill()                                                   # somewhere in epoch 3
    cut_job.wait()
    state_when_killed = state.read_text()
    resumed = run_main(*resume_flags(tiny_jpegs, cut), "--resume")
    whole_job.wait(timeout=600)
  stdout = (root / "whole.txt").read_text()
  assert whole_job.returncode == 1 and '"status": "aborted"' in stdout, stdout[-3000:]
  events = json.loads(stdout.split("PIPELINE_EVENTS ")[1].splitlines()[0])
  return {"whole": whole, "whole_stdout": stdout, "events": events, "cut": cut, "state_when_killed": state_when_killed,
          "resumed_stdout": resumed.stdout}


def test_a_run_with_two_evaluations_builds_each_input_pipeline_once_before_run_start(drill):
  events, stdout = drill["events"], drill["whole_stdout"]
  assert "epoch 2: eval top-1" in stdout and "epoch 4: eval top-1" in stdout, stdout[-3000:]
  assert sorted(events) == ["generator", "generator", "iter", "iter", "run_start"], events   # one train, one eval
  assert events.index("run_start") > max(i for i, e in enumerate(events) if e == "iter"), events


def test_the_step_loops_collections_skip_what_init_made(drill):
  """Init freezes its objects (gc.freeze): a full collection in the step loop no longer walks the model, the
  traced graphs and TensorFlow itself, a pause of ~0.4 s per collection on a CPU."""
  enabled, frozen = json.loads(drill["whole_stdout"].split("GC_AT_EXIT ")[1].splitlines()[0])
  assert enabled and frozen > 100_000, (enabled, frozen)   # ~375,000 objects in a tiny run


def final_weights(output_dir):
  import tensorflow as tf
  path = tf.train.latest_checkpoint(str(output_dir / "checkpoints"))
  return path, {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
                if name.endswith("VARIABLE_VALUE") and not name.startswith("save_counter")}


def test_a_killed_run_resumes_at_its_last_checkpoint_like_an_uninterrupted_run(drill):
  cut, resumed = drill["cut"], drill["resumed_stdout"]
  assert '"ckpt-4"' not in drill["state_when_killed"]
  assert "resuming after epoch 2" in resumed, resumed[-3000:]
  assert '"first_epoch_num": 3, "epoch_count": 2' in resumed
  assert "epoch 3/4  step 2/4" in resumed and "epoch 1/4" not in resumed
  (whole_path, whole), (cut_path, resumed_weights) = final_weights(drill["whole"]), final_weights(cut)
  assert whole_path.endswith("ckpt-4") and cut_path.endswith("ckpt-4")
  assert whole.keys() == resumed_weights.keys() and whole["epochs_done/.ATTRIBUTES/VARIABLE_VALUE"] == 4
  assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["checkpoint", "ckpt-4.data-00000-of-00001",
                                                                     "ckpt-4.index"]     # --keep_checkpoints=1
  for key in whole:
    np.testing.assert_allclose(resumed_weights[key], whole[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} of {whole_path}")


@pytest.mark.parametrize("flagfile, flag, message", [
    ("smoke.cfg", "--output_dir=/proc/tf_rn50_cannot_write_here", "cannot write to /proc/tf_rn50_cannot_write_here"),
    ("demo_cpu.cfg", "--data_dir=/nonexistent/imagenet", "--data_dir=/nonexistent/imagenet: /nonexistent/imagenet"),
])
def test_bad_folders_stop_the_run_before_run_start(flagfile, flag, message, tmp_path):
  result = run_main(f"--flagfile=flags/{flagfile}", f"--output_dir={tmp_path}", flag, timeout=120)
  assert result.returncode != 0
  assert message in result.stdout, result.stdout[-3000:]
  assert '"key": "run_start"' not in result.stdout and "Traceback" not in result.stdout, result.stdout[-3000:]
