"""The engine in one process: the step, the loop's host reads, the eval count, the MLPerf block cadence,
the non-finite stop, checkpoints and the progress line."""
import contextlib
import glob
import io
import itertools
import os
import shutil
import tempfile

import horovod.tensorflow as hvd
import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import callbacks, model, optim, train
from tf_rn50.bench.loop import counted_host_reads
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


def conv_net(size=8, classes=5):
  """A conv kernel (LARS' trust ratio and weight decay), batch norm (plain momentum, moving statistics) and a
  dense layer on every pixel (so that it can learn a batch of noise): the kinds of ResNet-50's variables, in a
  model that traces in a blink."""
  return keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(8, 3), keras.layers.BatchNormalization(),
                           keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(classes)])


def tiny_step(net, optimizer, max_nonfinite_steps=3):
  tally = train.Tally(max_nonfinite_steps, optimizer)
  return train.make_train_step(net, optimizer, tally, num_classes=3, label_smoothing=0.1, xla=False,
                               fp16_allreduce=False), tally


class Recorder(keras.callbacks.Callback):
  """Notes the host reads counted so far at every callback of train.fit."""

  def __init__(self, reads):
    super().__init__()
    self.reads, self.events = reads, []

  def on_epoch_begin(self, epoch, logs=None):
    self.events.append(("begin", epoch, len(self.reads)))

  def on_train_batch_end(self, step, logs=None):
    self.events.append(("read", step, len(self.reads)))

  def on_epoch_end(self, epoch, logs=None):
    self.events.append(("end", epoch, len(self.reads)))


class StepTest(tf.test.TestCase):

  def test_training_steps_lower_the_loss_of_a_batch(self):
    # ResNet-50 learning under this step and LARS is the demo's run (tests/test_demo_run.py).
    keras.utils.set_random_seed(0)
    net = conv_net(32, 10)
    opt = optim.LARS(optim.WarmupPolyDecay(2.0, 2, 20, 1e-4, 2.0))
    opt.build(net.trainable_variables)
    tally = train.Tally(10, opt)
    step = train.make_train_step(net, opt, tally, num_classes=10, label_smoothing=0.1, xla=False,
                                 fp16_allreduce=False)
    images, labels = tf.random.normal([16, 32, 32, 3]), tf.range(16) % 10
    losses = []
    for _ in range(8):
      step(images, labels)
      losses.append(tally.read()["loss"])
    self.assertEqual(int(opt.iterations), 8)
    self.assertEqual(tally.read()["step"], 8)
    self.assertLess(losses[-1], 0.7 * losses[0])

  def test_the_xla_step_compiles_around_the_allreduce_and_matches_the_plain_one(self):
    weights = {}
    for xla in (False, True):
      keras.utils.set_random_seed(0)
      net = conv_net()
      opt = optim.LARS(0.5)
      opt.build(net.trainable_variables)
      step = train.make_train_step(net, opt, train.Tally(1, opt), num_classes=5, label_smoothing=0.1, xla=xla,
                                   fp16_allreduce=False)
      images, labels = tf.random.stateless_normal([8, 8, 8, 3], [1, 2]), tf.range(8) % 5
      for _ in range(3):
        step(images, labels)
      weights[xla] = [v.numpy() for v in net.variables]
    for plain, compiled in zip(weights[False], weights[True]):
      self.assertAllClose(plain, compiled, rtol=1e-4, atol=1e-5)

  def test_eval_takes_one_pass_of_the_endless_input_and_counts_only_real_examples(self):
    net = tiny_model()
    net.layers[0].set_weights([np.eye(4, 3, dtype=np.float32), np.zeros(3, np.float32)])  # argmax of x[:3]
    eval_step = train.make_eval_step(net, xla=False)
    images = tf.constant([[1., 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    self.assertAllEqual(eval_step(images, tf.constant([0, 2, 2, -1])), [2, 3])   # pad never counts
    one_pass = [(images, tf.constant([0, 1, 2, 0])), (images, tf.constant([1, -1, -1, -1]))]
    batches = iter(one_pass * 3)                                                   # endless, as the data layer's
    self.assertEqual(train.evaluate(eval_step, batches, 2), (4 / 5, 5))
    self.assertEqual(train.evaluate(eval_step, batches, 2), (4 / 5, 5))           # the next pass, from its start


class LoopTest(tf.test.TestCase):
  """train.fit with the engine's callbacks, a tiny model and real steps."""

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(0)
    self.net = tiny_model()
    self.schedule = optim.WarmupPolyDecay(0.1, 10, 30, 1e-4, 2.0)
    self.opt = optim.LARS(self.schedule)
    self.opt.build(self.net.trainable_variables)

  def batches(self, nan_at_step=None):
    step = 0
    while True:
      step += 1
      images = tf.random.stateless_normal([4, 4], [0, step])
      yield (images * np.nan if step == nan_at_step else images), tf.range(4) % 3

  def test_the_loop_reads_the_device_only_every_log_every_steps_and_before_evaluations(self):
    plan = Plan(num_ranks=1, batch_size=4, train_examples=40, eval_examples=6, train_epochs=2, warmup_epochs=1.0,
                eval_period=2, eval_offset=1)                    # 10 steps per epoch; one eval, after epoch 2
    step, tally = tiny_step(self.net, self.opt)
    eval_step = train.make_eval_step(self.net, xla=False)
    train.warm_up(step, eval_step, self.net, self.opt, tally, [4, 4], tf.float32)
    eval_batches = iter(lambda: (tf.ones([4, 4]), tf.constant([0, 1, 2, -1])), None)
    cadence = callbacks.EvalCadence(eval_step=eval_step, eval_batches=eval_batches, eval_steps=2, plan=plan,
                                    target_accuracy=1.0, mllog=RecordingLog())
    progress = callbacks.Progress(plan=plan, learning_rate=self.schedule.at_step, enabled=True,
                                  tensorboard_dir=tempfile.mkdtemp(dir=self.get_temp_dir()))
    with counted_host_reads() as reads, contextlib.redirect_stdout(io.StringIO()) as out:
      recorder = Recorder(reads)
      train.fit(step, tally, self.batches(), model=self.net, plan=plan, start_epoch=0, log_every=4,
                learning_rate=self.schedule.at_step,
                callbacks=keras.callbacks.CallbackList([cadence, progress, recorder], model=self.net))
    # epoch 1: reads after steps 4 and 8 only (its end is not a block end); epoch 2: after steps 12, 16 and 20
    # (the last of the block), then the evaluation's one read of its counts.
    self.assertEqual(recorder.events, [("begin", 0, 0), ("read", 4, 1), ("read", 8, 2), ("end", 0, 2),
                                       ("begin", 1, 2), ("read", 12, 3), ("read", 16, 4), ("read", 20, 5),
                                       ("end", 1, 6)])
    self.assertLen(reads, 6, reads)
    lines = out.getvalue().splitlines()
    self.assertLen(lines, 6)
    self.assertRegex(lines[0], r"^epoch 1/2  step 4/10  loss \d\.\d{4}  lr 0\.04  [\d.]+ img/s  ETA [\d.]+ min$")
    self.assertEqual(lines[-1], "epoch 2: eval top-1 0.33333")

  def test_a_run_of_non_finite_losses_stops_at_the_next_read_naming_its_steps_and_rate(self):
    plan = Plan(num_ranks=1, batch_size=4, train_examples=40, eval_examples=8, train_epochs=3, warmup_epochs=1.0,
                eval_period=3, eval_offset=2)                    # 10 steps per epoch
    step, tally = tiny_step(self.net, self.opt, max_nonfinite_steps=3)
    callback_list = keras.callbacks.CallbackList([], model=self.net)
    # A NaN image at step 6 makes every weight NaN: steps 6, 7, 8 reach the limit; the read after step 10 sees it.
    with self.assertRaisesRegex(train.NonFiniteLoss, r"not finite for 3 consecutive steps, steps 6-8 \(epoch 1, "
                                                      r"learning rate 0\.08 at step 8\); seen at step 10 "):
      train.fit(step, tally, self.batches(nan_at_step=6), model=self.net, plan=plan, callbacks=callback_list,
                start_epoch=0, log_every=5, learning_rate=self.schedule.at_step)
    self.assertEqual(int(self.opt.iterations), 10)


class EvalCadenceTest(tf.test.TestCase):

  def test_nf5488_blocks_evals_and_stop_follow_the_seed(self):
    log, net = RecordingLog(), tiny_model()
    cadence = callbacks.EvalCadence(eval_step=scripted_eval_step(SEED_ACCURACY, 50000), eval_batches=itertools.repeat((0, 0)), eval_steps=1,
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
    cadence = callbacks.EvalCadence(eval_step=scripted_eval_step([0.5] * 9, 50000), eval_batches=itertools.repeat((0, 0)), eval_steps=1,
                                    plan=NF5488, target_accuracy=0.759, mllog=log)
    self.assertEqual(drive(cadence, net, NF5488), 37)
    self.assertEqual(cadence.status, C.ABORTED)
    self.assertEqual(log.of(C.BLOCK_START)[-1], {"first_epoch_num": 36, "epoch_count": 2})
    self.assertEqual(log.of(C.BLOCK_STOP)[-1], {"first_epoch_num": 36})
    self.assertLen(log.of(C.EVAL_ACCURACY), 9)

  def test_a_resumed_run_opens_its_first_block_mid_way(self):
    log, net = RecordingLog(), tiny_model()
    cadence = callbacks.EvalCadence(eval_step=scripted_eval_step([0.8], 50000), eval_batches=itertools.repeat((0, 0)), eval_steps=1,
                                    plan=NF5488, target_accuracy=0.759, mllog=log, start_epoch=5)
    self.assertEqual(drive(cadence, net, NF5488, start_epoch=5), 7)
    self.assertEqual(log.of(C.BLOCK_START), [{"first_epoch_num": 6, "epoch_count": 2}])
    self.assertEqual(log.of(C.BLOCK_STOP), [{"first_epoch_num": 4}])

  def test_an_eval_that_misses_examples_is_an_error(self):
    cadence = callbacks.EvalCadence(eval_step=lambda images, labels: tf.constant([10, 49999]), eval_batches=itertools.repeat((0, 0)), eval_steps=1,
                                    plan=NF5488, target_accuracy=0.759, mllog=RecordingLog())
    with self.assertRaisesRegex(RuntimeError, "counted 49999 examples, the validation set has 50000"):
      drive(cadence, tiny_model(), NF5488)


class CheckpointTest(tf.test.TestCase):
  """On ResNet-50's real variable paths. Its tests save what they hold and compare what they restore, so they
  share the few models (a build is ~2 s): `made` is two of 10 classes and one of 20."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.made = {10: [cls.build(10), cls.build(10)], 20: [cls.build(20)]}

  @staticmethod
  def build(num_classes):
    net = model.resnet50(num_classes, (32, 32, 3))
    opt = keras.optimizers.LossScaleOptimizer(optim.LARS(0.1))
    opt.build(net.trainable_variables)
    return net, opt

  def make(self, num_classes=10, second=False):
    return self.made[num_classes][second]

  def test_saves_after_each_block_keeps_the_newest_and_restores_every_variable_by_path(self):
    directory = self.get_temp_dir()
    net, opt = self.make()
    plan = Plan(num_ranks=1, batch_size=2, train_examples=8, eval_examples=2, train_epochs=6, warmup_epochs=1.0,
                eval_period=2, eval_offset=1)                    # evals after epochs 2, 4, 6
    saver = callbacks.Checkpoint(directory, plan, net, opt, keep=2, enabled=True)
    saver.set_model(net)
    for epoch in range(5):
      opt.apply([tf.ones_like(v) for v in net.trainable_variables], net.trainable_variables)
      saver.on_epoch_end(epoch)
      if epoch == 3:
        saved = [v.numpy() for v in train.state_variables(net, opt)]    # the state checkpoint 4 holds
    saver.on_train_end()
    self.assertEqual(sorted(os.listdir(directory)), ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
                                                     "ckpt-4.data-00000-of-00001", "ckpt-4.index"])
    self.assertIn("bn1.Sgamma/.ATTRIBUTES/VARIABLE_VALUE",
                  [k for k, _ in tf.train.list_variables(os.path.join(directory, "ckpt-4"))])   # stored by path

    fresh, fresh_opt = self.make(second=True)
    self.assertEqual(callbacks.restore(directory, fresh, fresh_opt), 4)
    restored = train.state_variables(fresh, fresh_opt)
    for value, variable in zip(saved, restored):
      self.assertAllEqual(value, variable.numpy(), msg=variable.path)
    self.assertEqual(int(fresh_opt.inner_optimizer.iterations), 4)
    self.assertEqual(callbacks.restore(os.path.join(directory, "ckpt-2"), fresh, fresh_opt), 2)   # one checkpoint
    self.assertEqual(int(fresh_opt.inner_optimizer.iterations), 2)

  def test_a_write_cut_short_is_never_restored(self):
    directory = self.get_temp_dir()
    net, opt = self.make()
    saver = callbacks.Checkpoint(directory, NF5488, net, opt, keep=2, enabled=True)
    saver.on_epoch_end(2)
    saver.on_train_end()
    # What a run killed while writing its epoch-7 checkpoint leaves: TensorFlow's temporary folder and even a
    # complete-looking checkpoint, but no line for it in the `checkpoint` file, written only after the files.
    for suffix in (".index", ".data-00000-of-00001"):
      shutil.copy(os.path.join(directory, "ckpt-3" + suffix), os.path.join(directory, "ckpt-7" + suffix))
    os.makedirs(os.path.join(directory, "ckpt-7_temp"))
    self.assertEqual(callbacks.restore(directory, *self.make(second=True)), 3)

  def test_restoring_into_another_model_names_the_variables_that_differ(self):
    directory = self.get_temp_dir()
    net, opt = self.make()
    saver = callbacks.Checkpoint(directory, NF5488, net, opt, keep=2, enabled=True)
    saver.on_epoch_end(2)
    saver.on_train_end()
    other, other_opt = self.make(num_classes=20)
    with self.assertRaisesRegex(ValueError, r"ckpt-3 does not fit .*logits/kernel has shape \(2048, 10\) there, "
                                            r"\(2048, 20\) here"):
      callbacks.restore(directory, other, other_opt)
    plain = optim.LARS(0.1)                                   # fp32: no loss scale optimizer
    plain.build(net.trainable_variables)
    with self.assertRaisesRegex(ValueError, "it holds LossScaleOptimizer/dynamic_scale, which this model"):
      callbacks.restore(directory, net, plain)
    self.assertEqual(callbacks.restore(tempfile.mkdtemp(dir=self.get_temp_dir()), other, other_opt), 0)
    with self.assertRaisesRegex(FileNotFoundError, "ckpt-9: neither a checkpoint folder nor a checkpoint"):
      callbacks.restore(os.path.join(directory, "ckpt-9"), other, other_opt)
    for path in glob.glob(os.path.join(directory, "ckpt-3.*")):
      os.remove(path)
    with self.assertRaisesRegex(FileNotFoundError, "checkpoint names .*ckpt-3 as the newest checkpoint, but its files"):
      callbacks.restore(directory, net, opt)


class ProgressTest(tf.test.TestCase):

  def test_prints_progress_and_writes_tensorboard_scalars_at_each_read(self):
    tensorboard = tempfile.mkdtemp(dir=self.get_temp_dir())
    plan = Plan(num_ranks=2, batch_size=4, train_examples=80, eval_examples=8, train_epochs=2, warmup_epochs=1.0,
                eval_period=1, eval_offset=0)                     # 10 steps per epoch
    progress = callbacks.Progress(plan=plan, learning_rate=lambda step: step / 100, tensorboard_dir=tensorboard,
                                  enabled=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      progress.on_epoch_begin(0)
      for step in (5, 10):
        progress.on_train_batch_end(step, {"loss": 2.0 / step, "epoch": 0, "step_in_epoch": step, "skipped": 1,
                                           "loss_scale": 1024.0})
      progress.on_epoch_end(0, {"eval_accuracy": 0.5})
    lines = out.getvalue().splitlines()
    self.assertLen(lines, 3)
    self.assertRegex(lines[0], r"^epoch 1/2  step 5/10  loss 0\.4000  lr 0\.05  [\d.]+ img/s  ETA [\d.]+ min$")
    self.assertRegex(lines[1], r"^epoch 1/2  step 10/10  loss 0\.2000  lr 0\.1  ")
    self.assertEqual(lines[2], "epoch 1: eval top-1 0.50000")
    scalars = {}
    for path in glob.glob(os.path.join(tensorboard, "events.out.tfevents.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          scalars[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
    self.assertEqual({tag for tag, _ in scalars}, {"train/loss", "train/learning_rate", "train/images_per_second",
                                                   "train/loss_scale", "train/skipped_steps", "eval/top1_accuracy"})
    self.assertAllClose([scalars["train/loss", 5], scalars["train/learning_rate", 10], scalars["eval/top1_accuracy", 10]],
                        [0.4, 0.1, 0.5])

  def test_other_ranks_print_nothing(self):
    progress = callbacks.Progress(plan=NF5488, learning_rate=lambda step: 1.0, tensorboard_dir=None, enabled=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      progress.on_epoch_begin(0)
      for step in range(1, 4):
        progress.on_train_batch_end(step, {"loss": 1.0, "epoch": 0, "step_in_epoch": step, "skipped": 0,
                                           "loss_scale": 1.0})
      progress.on_epoch_end(0, {"eval_accuracy": 0.5})
    self.assertEqual(out.getvalue(), "")
