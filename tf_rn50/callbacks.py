"""What happens around the steps: the MLPerf eval cadence, checkpoints, progress and TensorBoard.

Each is a keras.callbacks.Callback driven by train.fit. Every rank runs the eval cadence (the
evaluation is collective); only rank 0 writes checkpoints, progress lines and TensorBoard.
"""
import glob
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import train
from tf_rn50.mlperf import C


class EvalCadence(keras.callbacks.Callback):
  """MLPerf blocks: epochs run in blocks that end with an evaluation (1-based epochs 3, 7, ... for
  NF5488); the run stops with `success` at the first accuracy >= target, else `aborted`."""

  def __init__(self, *, eval_step, eval_batches, plan, target_accuracy, mllog, start_epoch=0):
    super().__init__()
    self.eval_step, self.eval_batches, self.plan, self.start_epoch = eval_step, eval_batches, plan, start_epoch
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
      self.accuracy, total = train.evaluate(self.eval_step, self.eval_batches)
      if total != self.plan.eval_examples:
        raise RuntimeError(f"evaluation counted {total} examples, the validation set has {self.plan.eval_examples}")
      self.mllog.end(C.EVAL_STOP, epoch_num=epoch + 1)
      self.mllog.event(C.EVAL_ACCURACY, round(self.accuracy, 5), epoch_num=epoch + 1)
      logs["eval_accuracy"] = self.accuracy
      if self.accuracy >= self.target_accuracy:
        self.status, self.model.stop_training = C.SUCCESS, True
    if self.plan.ends_block(epoch):
      self.mllog.end(C.BLOCK_STOP, first_epoch_num=self.block_of(epoch)[0])


class Checkpoint(keras.callbacks.Callback):
  """After each eval block rank 0 saves every model and optimizer variable with the epoch reached.

  One .npz per save, written to a temporary name and renamed, so a crash never leaves a partial
  checkpoint under the real name; `restore` reads the newest whole one.
  """

  def __init__(self, directory, plan, optimizer, enabled, keep=2):
    super().__init__()
    self.directory, self.plan, self.optimizer, self.enabled, self.keep = directory, plan, optimizer, enabled, keep

  def on_epoch_end(self, epoch, logs=None):
    if not self.enabled or not self.plan.ends_block(epoch):
      return
    os.makedirs(self.directory, exist_ok=True)
    path = os.path.join(self.directory, f"ckpt-epoch{epoch + 1:03d}.npz")
    values = {f"v{i:05d}": v.numpy() for i, v in enumerate(train.state_variables(self.model, self.optimizer))}
    with open(path + ".tmp", "wb") as f:
      np.savez(f, epochs_done=epoch + 1, **values)
    os.replace(path + ".tmp", path)
    for old in sorted(glob.glob(os.path.join(self.directory, "ckpt-epoch*.npz")))[:-self.keep]:
      os.remove(old)


def restore(directory, model, optimizer):
  """Loads the newest checkpoint into model and optimizer; returns the epochs it had done (0 if none)."""
  paths = sorted(glob.glob(os.path.join(directory, "ckpt-epoch*.npz")))
  if not paths:
    return 0
  variables = train.state_variables(model, optimizer)
  with np.load(paths[-1]) as ckpt:
    saved = sorted(k for k in ckpt.files if k.startswith("v"))
    if len(saved) != len(variables):
      raise ValueError(f"{paths[-1]} holds {len(saved)} variables, this model and optimizer have {len(variables)}: "
                       "was it written with other flags?")
    for key, variable in zip(saved, variables):
      if ckpt[key].shape != tuple(variable.shape):
        raise ValueError(f"{paths[-1]}: {key} has shape {ckpt[key].shape}, {variable.path} has {tuple(variable.shape)}")
      variable.assign(ckpt[key])
    return int(ckpt["epochs_done"])


class Progress(keras.callbacks.Callback):
  """Rank 0: a line every `log_every` steps (epoch, step, loss, LR, global img/s, ETA) and
  TensorBoard scalars; eval accuracy at each evaluation."""

  def __init__(self, *, plan, learning_rate, loss_scale, skipped_steps, log_every, tensorboard_dir, enabled):
    super().__init__()
    self.plan, self.learning_rate, self.log_every, self.enabled = plan, learning_rate, log_every, enabled
    self.loss_scale, self.skipped_steps = loss_scale, skipped_steps
    self.writer = tf.summary.create_file_writer(tensorboard_dir) if enabled else None
    self.mark = None

  def on_train_batch_end(self, step, logs=None):
    if not self.enabled:
      return
    if self.mark is None:
      self.mark = (step, time.time())
      return
    if step % self.log_every and step != self.plan.total_steps:
      return
    (last_step, last_time), now = self.mark, time.time()
    seconds_per_step = (now - last_time) / max(step - last_step, 1)
    images_per_second = self.plan.global_batch_size / seconds_per_step
    eta_minutes = (self.plan.total_steps - step) * seconds_per_step / 60
    lr = self.learning_rate(step)
    print(f"epoch {int(logs['epoch']) + 1}/{self.plan.train_epochs}  step {int(logs['step_in_epoch'])}/{self.plan.steps_per_epoch}"
          f"  loss {logs['loss']:.4f}  lr {lr:.5g}  {images_per_second:.1f} img/s  ETA {eta_minutes:.1f} min", flush=True)
    with self.writer.as_default(step=step):
      tf.summary.scalar("train/loss", logs["loss"])
      tf.summary.scalar("train/learning_rate", lr)
      tf.summary.scalar("train/images_per_second", images_per_second)
      if self.loss_scale is not None:
        tf.summary.scalar("train/loss_scale", float(self.loss_scale()))
      tf.summary.scalar("train/skipped_steps", self.skipped_steps(step))
    self.mark = (step, now)

  def on_epoch_end(self, epoch, logs=None):
    self.mark = None   # the next interval starts after this epoch's evaluation and checkpoint
    if self.enabled and "eval_accuracy" in logs:
      print(f"epoch {epoch + 1}: eval top-1 {logs['eval_accuracy']:.5f}", flush=True)
      with self.writer.as_default(step=(epoch + 1) * self.plan.steps_per_epoch):
        tf.summary.scalar("eval/top1_accuracy", logs["eval_accuracy"])
      self.writer.flush()
