"""What happens around the steps: the MLPerf eval cadence, checkpoints, progress and TensorBoard.

Each is a keras.callbacks.Callback driven by train.fit. Every rank runs the eval cadence (the
evaluation is collective); only rank 0 writes checkpoints, progress lines and TensorBoard.
"""
import os
import re
import threading
import time

import keras
import tensorflow as tf

from tf_rn50 import train
from tf_rn50.mlperf import C


class EvalCadence(keras.callbacks.Callback):
  """MLPerf blocks: epochs run in blocks that end with an evaluation (1-based epochs 3, 7, ... for
  NF5488); the run stops with `success` at the first accuracy >= target, else `aborted`. Each
  evaluation takes the next `eval_steps` batches (one pass) of the endless eval iterator."""

  def __init__(self, *, eval_step, eval_batches, eval_steps, plan, target_accuracy, mllog, start_epoch=0):
    super().__init__()
    self.eval_step, self.eval_batches, self.eval_steps = eval_step, eval_batches, eval_steps
    self.plan, self.start_epoch = plan, start_epoch
    self.target_accuracy, self.mllog = target_accuracy, mllog
    self.status, self.accuracy = C.ABORTED, None

  def block_of(self, epoch):
    """(first, count) of the block holding 0-based `epoch`, in 1-based epochs as MLPerf logs them."""
    ends = [e for e in self.plan.eval_epochs if e > epoch] or [self.plan.train_epochs]
    starts = [e + 1 for e in self.plan.eval_epochs if e <= epoch] or [1]
    return max(starts), min(ends) - max(starts) + 1

  def on_epoch_begin(self, epoch, logs=None):
    first, count = self.block_of(epoch)
    if epoch + 1 == first or epoch == self.start_epoch:
      self.mllog.start(C.BLOCK_START, first_epoch_num=epoch + 1, epoch_count=first + count - epoch - 1)
    self.mllog.start(C.EPOCH_START, epoch_num=epoch + 1)

  def on_epoch_end(self, epoch, logs=None):
    self.mllog.end(C.EPOCH_STOP, epoch_num=epoch + 1)
    if epoch + 1 in self.plan.eval_epochs:
      self.mllog.start(C.EVAL_START, epoch_num=epoch + 1)
      self.accuracy, total = train.evaluate(self.eval_step, self.eval_batches, self.eval_steps)
      if total != self.plan.eval_examples:
        raise RuntimeError(f"evaluation counted {total} examples, the validation set has {self.plan.eval_examples}")
      self.mllog.end(C.EVAL_STOP, epoch_num=epoch + 1)
      self.mllog.event(C.EVAL_ACCURACY, round(self.accuracy, 5), epoch_num=epoch + 1)
      logs["eval_accuracy"] = self.accuracy
      if self.accuracy >= self.target_accuracy:
        self.status, self.model.stop_training = C.SUCCESS, True
    if self.plan.ends_block(epoch):
      self.mllog.end(C.BLOCK_STOP, first_epoch_num=self.block_of(epoch)[0])


def _by_path(model, optimizer):
  """The run's state keyed by variable path, so that tf.train.Checkpoint stores and matches each variable by
  its path, not by its position: "conv1/kernel", "LARS/conv1_kernel_velocity", "LossScaleOptimizer/dynamic_scale"
  (an optimizer's path starts with its class: its instance name is numbered, "loss_scale_optimizer_1", when a
  process builds a second one)."""
  state = {v.path: v.value for v in model.variables}
  inner = train.inner_optimizer(optimizer)
  owners = {id(v): inner for v in inner.variables}
  for v in optimizer.variables:
    state[f"{type(owners.get(id(v), optimizer)).__name__}/{v.path.split('/', 1)[1]}"] = v.value
  return state


class Checkpoint(keras.callbacks.Callback):
  """--checkpoint=block: after each block (its evaluation) rank 0 saves every model and optimizer
  variable and the epochs done, with tf.train.Checkpoint and CheckpointManager (`ckpt-<epochs>` files, the
  newest `keep` kept).

  The write runs off the step loop: the loop only waits for a copy of the variables into host variables made
  here, during init; a thread writes that copy while training goes on. The manager names a checkpoint in its
  `checkpoint` file only once the checkpoint is whole, and `restore` reads only what that file names, so a
  crash during a write leaves the previous checkpoint as the newest.
  """

  def __init__(self, directory, plan, model, optimizer, *, keep, enabled):
    super().__init__()
    self.plan, self.enabled = plan, enabled
    self.state, self.writer, self.failure = train.state_variables(model, optimizer), None, None
    if not enabled:
      return
    with tf.device("/cpu:0"):
      self.copies = [tf.Variable(v.value, trainable=False) for v in self.state]
      self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
    host = dict(zip(_by_path(model, optimizer), self.copies))
    self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(epochs_done=self.epochs_done, **host), directory,
                                              max_to_keep=keep, checkpoint_name="ckpt")

  def on_epoch_end(self, epoch, logs=None):
    if not self.enabled or not self.plan.ends_block(epoch):
      return
    self.wait()
    for copy, variable in zip(self.copies, self.state):
      copy.assign(variable.value)
    self.epochs_done.assign(epoch + 1)
    self.writer = threading.Thread(target=self.write, args=(epoch + 1,), name="checkpoint-writer")
    self.writer.start()

  def write(self, epochs_done):
    try:
      self.manager.save(checkpoint_number=epochs_done)
    except Exception as e:   # re-raised on the training thread by wait()
      self.failure = e

  def wait(self):
    """Waits for the write under way, if any; raises its error."""
    if self.writer is not None:
      self.writer.join()
      self.writer = None
    if self.failure is not None:
      raise RuntimeError(f"writing a checkpoint to {self.manager.directory} failed: {self.failure}") from self.failure

  def on_train_end(self, logs=None):
    self.wait()


def restore(path, model, optimizer):
  """Loads a checkpoint into model and optimizer and returns the epochs it had done.

  `path` is a run's checkpoint folder (its newest whole checkpoint is taken; 0 is returned when it has none)
  or one checkpoint (".../ckpt-8"). Variables are matched by their Keras path; any variable missing on either
  side or of another shape stops with a ValueError that names it.
  """
  if os.path.isdir(path):
    newest, state = tf.train.latest_checkpoint(path), tf.train.get_checkpoint_state(path)
    if newest is None and state is not None:
      raise FileNotFoundError(f"{path}/checkpoint names {state.model_checkpoint_path} as the newest checkpoint, "
                              "but its files are gone")
    if newest is None:
      return 0
    path = newest
  elif not os.path.exists(path + ".index"):
    raise FileNotFoundError(f"{path}: neither a checkpoint folder nor a checkpoint (no {path}.index)")
  state = _by_path(model, optimizer)
  saved = {}
  for key, shape in tf.train.list_variables(path):
    if key.endswith("/.ATTRIBUTES/VARIABLE_VALUE"):   # tf.train.Checkpoint escapes "/" as ".S" and "." as ".."
      name = re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), key.split("/.ATTRIBUTES/")[0])
      saved[name] = tuple(shape)
  problems = [f"{name} is not in it" for name in state if name not in saved]
  problems += [f"it holds {name}, which this model and optimizer do not have"
               for name in saved if name not in state and name not in ("epochs_done", "save_counter")]
  problems += [f"{name} has shape {saved[name]} there, {tuple(v.shape)} here"
               for name, v in state.items() if name in saved and saved[name] != tuple(v.shape)]
  if problems:
    raise ValueError(f"checkpoint {path} does not fit this model and optimizer (written with other flags?): "
                     + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
  epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
  tf.train.Checkpoint(epochs_done=epochs_done, **state).read(path).expect_partial().assert_existing_objects_matched()
  return int(epochs_done.numpy())


class Progress(keras.callbacks.Callback):
  """Rank 0: at each of train.fit's reads (every `log_every` steps and before each evaluation) a line
  (epoch, step, loss, LR, global img/s, ETA) and TensorBoard scalars; eval accuracy at each evaluation.
  The LR shown is the one the step applied: the schedule advances with every step, skipped or not."""

  TRAIN = ("train/loss", "train/learning_rate", "train/images_per_second", "train/skipped_steps", "train/loss_scale")
  EVAL = ("eval/top1_accuracy",)

  def __init__(self, *, plan, learning_rate, tensorboard_dir, enabled):
    super().__init__()
    self.plan, self.learning_rate, self.enabled = plan, learning_rate, enabled
    self.mark = None
    if not enabled:
      return
    writer = tf.summary.create_file_writer(tensorboard_dir, max_queue=1000)

    def writer_of(tags):
      @tf.function(input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([len(tags)], tf.float32)])
      def write(step, values):   # in a graph: eagerly, tf.summary reads its recording condition back per scalar
        with writer.as_default(step=step):
          for i, tag in enumerate(tags):
            tf.summary.scalar(tag, values[i])
      return write.get_concrete_function()   # traced now, during init; a concrete function is the cheapest call
    writes = {tags: writer_of(tags) for tags in (self.TRAIN, self.EVAL)}
    self.write = lambda step, values, tags: writes[tags](tf.constant(step, tf.int64), tf.constant(values, tf.float32))
    self.writer = writer

  def on_epoch_begin(self, epoch, logs=None):
    self.mark = (epoch * self.plan.steps_per_epoch, time.time())   # after the last evaluation and checkpoint

  def on_train_batch_end(self, step, logs=None):
    if not self.enabled:
      return
    (last_step, last_time), now = self.mark, time.time()
    seconds_per_step = (now - last_time) / max(step - last_step, 1)
    images_per_second = self.plan.global_batch_size / seconds_per_step
    eta_minutes = (self.plan.total_steps - step) * seconds_per_step / 60
    lr = self.learning_rate(step)
    print(f"epoch {int(logs['epoch']) + 1}/{self.plan.train_epochs}  step {int(logs['step_in_epoch'])}/{self.plan.steps_per_epoch}"
          f"  loss {logs['loss']:.4f}  lr {lr:.5g}  {images_per_second:.1f} img/s  ETA {eta_minutes:.1f} min", flush=True)
    self.write(step, [logs["loss"], lr, images_per_second, logs["skipped"], logs["loss_scale"]], self.TRAIN)
    self.mark = (step, now)

  def on_epoch_end(self, epoch, logs=None):
    if self.enabled and "eval_accuracy" in logs:
      print(f"epoch {epoch + 1}: eval top-1 {logs['eval_accuracy']:.5f}", flush=True)
      self.write((epoch + 1) * self.plan.steps_per_epoch, [logs["eval_accuracy"]], self.EVAL)
      self.writer.flush()

  def on_train_end(self, logs=None):
    if self.enabled:
      self.writer.flush()
