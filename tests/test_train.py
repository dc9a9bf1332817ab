"""The engine in one process: the step, the eval count, the MLPerf block cadence, the non-finite stop,
checkpoints and the progress line."""
import contextlib
import glob
import io
import os
import tempfile

import horovod.tensorflow as hvd
import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import callbacks, model, optim, train
from tf_rn50.flags import Plan
from tf_rn50.mlperf import C

hvd.init()
NF5488 = Plan(num_ranks=8, batch_size=408, train_examples=1281167, eval_examples=50000, train_epochs=37,
              warmup_epochs=2.0, eval_period=4, eval_offset=2)
SEED_ACCURACY = [0.348, 0.446, 0.541, 0.586, 0.652, 0.692, 0.727, 0.751, 0.761]   # epochs 3, 7, ..., 35


class RecordingLog:
  """Stands in for MLPerfLog: keeps (key, metadata) of every event."""

  def __init__(self):
    self.events = []

  def start(self, key, value=None, **metadata):
    self.events.append((key, metadata))

  event = end = start

  def of(self, key):
    return [m for k, m in self.events if k == key]


def scripted_eval_step(accuracies, total):
  """An eval step that reports the next accuracy of `accuracies` over `total` examples per call."""
  calls = iter(accuracies)
  return lambda images, labels: tf.constant([round(next(calls) * total), total])


def drive(cadence, net, plan, start_epoch=0):
  cadence.set_model(net)
  net.stop_training = False
  for epoch in range(start_epoch, plan.train_epochs):
    cadence.on_epoch_begin(epoch)
    cadence.on_epoch_end(epoch, {})
    if net.stop_training:
      return epoch + 1
  return plan.train_epochs


def tiny_model():
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


class StepTest(tf.test.TestCase):

  def test_training_steps_lower_the_loss_of_a_batch(self):
    keras.utils.set_random_seed(0)
    net = model.resnet50(10, (32, 32, 3))
    opt = optim.LARS(optim.WarmupPolyDecay(2.0, 2, 20, 1e-4, 2.0))
    opt.build(net.trainable_variables)
    step = train.make_train_step(net, opt, num_classes=10, label_smoothing=0.1, xla=False, fp16_allreduce=False)
    images, labels = tf.random.normal([16, 32, 32, 3]), tf.range(16) % 10
    losses = [float(step(images, labels)) for _ in range(8)]
    self.assertEqual(int(opt.iterations), 8)
    self.assertLess(losses[-1], 0.7 * losses[0])

  def test_the_xla_step_compiles_around_the_allreduce_and_matches_the_plain_one(self):
    weights = {}
    for xla in (False, True):
      keras.utils.set_random_seed(0)
      net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
      opt = optim.LARS(0.5)
      opt.build(net.trainable_variables)
      step = train.make_train_step(net, opt, num_classes=5, label_smoothing=0.1, xla=xla, fp16_allreduce=False)
      images, labels = tf.random.stateless_normal([8, 8, 8, 3], [1, 2]), tf.range(8) % 5
      for _ in range(3):
        step(images, labels)
      weights[xla] = [v.numpy() for v in net.variables]
    for plain, compiled in zip(weights[False], weights[True]):
      self.assertAllClose(plain, compiled, rtol=1e-4, atol=1e-5)

  def test_eval_counts_only_real_examples_and_sums_over_batches(self):
    net = tiny_model()
    net.layers[0].set_weights([np.eye(4, 3, dtype=np.float32), np.zeros(3, np.float32)])  # argmax of x[:3]
    eval_step = train.make_eval_step(net, xla=False)
    images = tf.constant([[1., 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    self.assertAllEqual(eval_step(images, tf.constant([0, 2, 2, -1])), [2, 3])   # pad never counts
    batches = [(images, tf.constant([0, 1, 2, 0])), (images, tf.constant([1, -1, -1, -1]))]
    self.assertEqual(train.evaluate(eval_step, batches), (4 / 5, 5))

  def test_non_finite_losses_stop_the_run_naming_step_and_rate(self):
    plan = Plan(num_ranks=1, batch_size=2, train_examples=8, eval_examples=2, train_epochs=3, warmup_epochs=1.0,
                eval_period=1, eval_offset=0)
    losses = iter([1.0, float("nan"), 2.0, float("nan"), float("inf"), float("nan"), 1.0])
    net = tiny_model()
    with self.assertRaisesRegex(train.NonFiniteLoss, r"for 3 consecutive steps, up to step 6 \(epoch 2, "
                                                      r"learning rate 0\.25\)"):
      train.fit(lambda images, labels: next(losses), iter(lambda: (None, None), 0), model=net, plan=plan,
                callbacks=keras.callbacks.CallbackList([], model=net), start_epoch=0, max_nonfinite_steps=3,
                learning_rate=lambda step: step / 24)


class EvalCadenceTest(tf.test.TestCase):

  def test_nf5488_blocks_evals_and_stop_follow_the_seed(self):
    log, net = RecordingLog(), tiny_model()
    cadence = callbacks.EvalCadence(eval_step=scripted_eval_step(SEED_ACCURACY, 50000), eval_batches=[(0, 0)],
                                    plan=NF5488, target_accuracy=0.759, mllog=log)
    self.assertEqual(drive(cadence, net, NF5488), 35)
    self.assertEqual(cadence.status, C.SUCCESS)
    self.assertEqual([(m["first_epoch_num"], m["epoch_count"]) for m in log.of(C.BLOCK_START)],
                     [(1, 3)] + [(e, 4) for e in range(4, 33, 4)])
    self.assertEqual([m["first_epoch_num"] for m in log.of(C.BLOCK_STOP)], [1] + list(range(4, 33, 4)))
    self.assertEqual([m["epoch_num"] for m in log.of(C.EVAL_START)], list(range(3, 36, 4)))
    self.assertEqual([m["epoch_num"] for m in log.of(C.EPOCH_STOP)], list(range(1, 36)))
    keys = [k for k, _ in log.events]
    self.assertEqual(keys[-5:], [C.EPOCH_STOP, C.EVAL_START, C.EVAL_STOP, C.EVAL_ACCURACY, C.BLOCK_STOP])

  def test_without_the_target_every_epoch_runs_and_the_status_is_aborted(self):
    log, net = RecordingLog(), tiny_model()
    cadence = callbacks.EvalCadence(eval_step=scripted_eval_step([0.5] * 9, 50000), eval_batches=[(0, 0)],
                                    plan=NF5488, target_accuracy=0.759, mllog=log)
    self.assertEqual(drive(cadence, net, NF5488), 37)
    self.assertEqual(cadence.status, C.ABORTED)
    self.assertEqual(log.of(C.BLOCK_START)[-1], {"first_epoch_num": 36, "epoch_count": 2})
    self.assertEqual(log.of(C.BLOCK_STOP)[-1], {"first_epoch_num": 36})
    self.assertLen(log.of(C.EVAL_ACCURACY), 9)

  def test_a_resumed_run_opens_its_first_block_mid_way(self):
    log, net = RecordingLog(), tiny_model()
    cadence = callbacks.EvalCadence(eval_step=scripted_eval_step([0.8], 50000), eval_batches=[(0, 0)],
                                    plan=NF5488, target_accuracy=0.759, mllog=log, start_epoch=5)
    self.assertEqual(drive(cadence, net, NF5488, start_epoch=5), 7)
    self.assertEqual(log.of(C.BLOCK_START), [{"first_epoch_num": 6, "epoch_count": 2}])
    self.assertEqual(log.of(C.BLOCK_STOP), [{"first_epoch_num": 4}])

  def test_an_eval_that_misses_examples_is_an_error(self):
    cadence = callbacks.EvalCadence(eval_step=lambda images, labels: tf.constant([10, 49999]), eval_batches=[(0, 0)],
                                    plan=NF5488, target_accuracy=0.759, mllog=RecordingLog())
    with self.assertRaisesRegex(RuntimeError, "counted 49999 examples, the validation set has 50000"):
      drive(cadence, tiny_model(), NF5488)


class CheckpointTest(tf.test.TestCase):

  def make(self):
    net = model.resnet50(10, (32, 32, 3))
    opt = keras.optimizers.LossScaleOptimizer(optim.LARS(0.1))
    opt.build(net.trainable_variables)
    return net, opt

  def test_saves_after_eval_blocks_and_restores_every_variable(self):
    directory = self.get_temp_dir()
    net, opt = self.make()
    opt.apply([tf.ones_like(v) for v in net.trainable_variables], net.trainable_variables)
    plan = Plan(num_ranks=1, batch_size=2, train_examples=8, eval_examples=2, train_epochs=6, warmup_epochs=1.0,
                eval_period=2, eval_offset=1)                    # evals after epochs 2, 4, 6
    saver = callbacks.Checkpoint(directory, plan, opt, enabled=True, keep=2)
    saver.set_model(net)
    for epoch in range(5):
      saver.on_epoch_end(epoch)
    self.assertEqual(sorted(os.listdir(directory)), ["ckpt-epoch002.npz", "ckpt-epoch004.npz"])
    with open(os.path.join(directory, "ckpt-epoch005.npz.tmp"), "wb") as f:
      f.write(b"a save cut short")                                  # never read

    fresh, fresh_opt = self.make()
    self.assertEqual(callbacks.restore(directory, fresh, fresh_opt), 4)
    for saved, restored in zip(net.variables + opt.variables, fresh.variables + fresh_opt.variables):
      self.assertAllEqual(saved.numpy(), restored.numpy())
    self.assertEqual(int(fresh_opt.inner_optimizer.iterations), 1)

  def test_restoring_into_another_model_names_the_file(self):
    directory = self.get_temp_dir()
    net, opt = self.make()
    saver = callbacks.Checkpoint(directory, NF5488, opt, enabled=True)
    saver.set_model(net)
    saver.on_epoch_end(2)
    other = model.resnet50(20, (32, 32, 3))
    other_opt = optim.LARS(0.1)
    other_opt.build(other.trainable_variables)
    with self.assertRaisesRegex(ValueError, "ckpt-epoch003.npz"):
      callbacks.restore(directory, other, other_opt)
    self.assertEqual(callbacks.restore(tempfile.mkdtemp(dir=self.get_temp_dir()), other, other_opt), 0)


class ProgressTest(tf.test.TestCase):

  def test_prints_progress_and_writes_tensorboard_scalars_every_n_steps(self):
    tensorboard = tempfile.mkdtemp(dir=self.get_temp_dir())
    plan = Plan(num_ranks=2, batch_size=4, train_examples=80, eval_examples=8, train_epochs=2, warmup_epochs=1.0,
                eval_period=1, eval_offset=0)                     # 10 steps per epoch
    progress = callbacks.Progress(plan=plan, learning_rate=lambda step: step / 100, loss_scale=lambda: 1024.0,
                                  skipped_steps=lambda step: 1, log_every=5, tensorboard_dir=tensorboard,
                                  enabled=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      for step in range(1, 11):
        progress.on_train_batch_end(step, {"loss": 2.0 / step, "epoch": 0, "step_in_epoch": step})
      progress.on_epoch_end(0, {"eval_accuracy": 0.5})
    lines = out.getvalue().splitlines()
    self.assertLen(lines, 3)
    self.assertRegex(lines[0], r"^epoch 1/2  step 5/10  loss 0\.4000  lr 0\.05  [\d.]+ img/s  ETA [\d.]+ min$")
    self.assertRegex(lines[1], r"^epoch 1/2  step 10/10  loss 0\.2000  lr 0\.1  ")
    self.assertEqual(lines[2], "epoch 1: eval top-1 0.50000")
    tags = set()
    for path in glob.glob(os.path.join(tensorboard, "events.out.tfevents.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(v.tag for v in event.summary.value)
    self.assertEqual(tags, {"train/loss", "train/learning_rate", "train/images_per_second", "train/loss_scale",
                            "train/skipped_steps", "eval/top1_accuracy"})

  def test_other_ranks_print_nothing(self):
    progress = callbacks.Progress(plan=NF5488, learning_rate=lambda step: 1.0, loss_scale=None,
                                  skipped_steps=lambda step: 0, log_every=1, tensorboard_dir=None, enabled=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      for step in range(1, 4):
        progress.on_train_batch_end(step, {"loss": 1.0, "epoch": 0, "step_in_epoch": step})
      progress.on_epoch_end(0, {"eval_accuracy": 0.5})
    self.assertEqual(out.getvalue(), "")
