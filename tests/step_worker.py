"""One Horovod rank of tests/test_distributed.py's step checks; rank 0 writes OUT/weights.npz and OUT/fp16.json.

  horovodrun -np N ... python tests/step_worker.py OUT

1. Allreduce: a fixed batch of 8 split evenly over the ranks, two steps of train.make_train_step with LARS,
   once with the fp32 and once with the fp16-compressed gradient allreduce. BatchNorm statistics are per rank
   by design (the seed's span of 408), so this model has no BN: it tests the gradient averaging. The test
   runs allreduce_weights itself for one rank, in its own process (Horovod without horovodrun is one rank).
2. The production precision: the real ResNet-50 at 64x64 under mixed_float16 with XLA and the
   LossScaleOptimizer, run by train.fit with the Progress callback for 2 steps, the loss scale forced to
   overflow on step 1. Records what the test checks: the weights around the skipped step, the skip count,
   the LR the optimizer applies next at each read, and a checksum of every rank's weights.
"""
import json
import os
import sys

import horovod.tensorflow as hvd
import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import callbacks, model, optim, train
from tf_rn50.flags import Plan


def allreduce_weights(fp16_allreduce):
  keras.utils.set_random_seed(0)
  net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
  opt = optim.LARS(optim.WarmupPolyDecay(1.0, 1, 4, 1e-4, 2.0), kernel_weight_decay=1e-3, eta=0.01)
  opt.build(net.trainable_variables)
  train.broadcast_state(net, opt)
  step = train.make_train_step(net, opt, train.Tally(1, opt), num_classes=5, label_smoothing=0.1, xla=False,
                               fp16_allreduce=fp16_allreduce)
  rng = np.random.default_rng(1)
  images, labels = rng.normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8, dtype=np.int32) % 5
  share = 8 // hvd.size()
  mine = slice(hvd.rank() * share, (hvd.rank() + 1) * share)
  for _ in range(2):
    step(tf.constant(images[mine]), tf.constant(labels[mine]))
  return [v.numpy() for v in net.trainable_variables]


class ForceOverflow(keras.callbacks.Callback):
  """Records the state at the start and at each read (after every step); the loss scale is set to overflow step
  1, then put back to a normal one."""

  def __init__(self, optimizer, schedule):
    super().__init__()
    self.optimizer, self.schedule, self.seen = optimizer, schedule, {}

  def on_epoch_begin(self, epoch, logs=None):
    self.on_train_batch_end(0, {"skipped": 0, "loss": 0.0, "step": 0})
    self.optimizer.dynamic_scale.assign(3e38)

  def on_train_batch_end(self, step, logs=None):
    inner = self.optimizer.inner_optimizer
    self.seen[step] = dict(
        logs, weights=[v.numpy() for v in self.model.trainable_variables + inner.velocities],
        next_lr=float(inner.learning_rate), schedule_next_lr=self.schedule.at_step(step + 1))
    if step == 1:
      self.optimizer.dynamic_scale.assign(1024.0)


def fp16_resnet(out):
  keras.utils.set_random_seed(0)
  net = model.resnet50(10, (64, 64, 3), dtype="fp16")
  schedule = optim.WarmupPolyDecay(0.5, 1, 2, 1e-4, 2.0)
  opt = keras.optimizers.LossScaleOptimizer(optim.LARS(schedule), initial_scale=1024.0)
  opt.build(net.trainable_variables)
  train.broadcast_state(net, opt)
  tally = train.Tally(3, opt)
  step = train.make_train_step(net, opt, tally, num_classes=10, label_smoothing=0.1, xla=True, fp16_allreduce=False)
  images = tf.cast(tf.random.stateless_normal([2, 64, 64, 3], [1, hvd.rank()]), tf.float16)
  batches = iter(lambda: (images, tf.constant([1, 2 + hvd.rank()])), None)
  plan = Plan(num_ranks=hvd.size(), batch_size=2, train_examples=4 * hvd.size(), eval_examples=2, train_epochs=1,
              warmup_epochs=0.5, eval_period=2, eval_offset=1)                    # one epoch of 2 steps, no eval
  force = ForceOverflow(opt, schedule)
  progress = callbacks.Progress(plan=plan, learning_rate=schedule.at_step, enabled=hvd.rank() == 0,
                                tensorboard_dir=os.path.join(out, "tensorboard"))
  callback_list = keras.callbacks.CallbackList([force, progress], model=net)
  train.fit(step, tally, batches, model=net, plan=plan, callbacks=callback_list, start_epoch=0, log_every=1,
            learning_rate=schedule.at_step)
  seen = force.seen
  changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(seen[a]["weights"], seen[b]["weights"]))
  checksum = float(sum(np.abs(v.numpy().astype(np.float64)).sum() for v in net.trainable_variables))
  return {
      "skipped": [seen[s]["skipped"] for s in (1, 2)],
      "losses": [seen[s]["loss"] for s in (1, 2)],
      "step_counter": [seen[s]["step"] for s in (1, 2)],
      "next_lr": [seen[s]["next_lr"] for s in (0, 1, 2)],
      "schedule_next_lr": [seen[s]["schedule_next_lr"] for s in (0, 1, 2)],
      "changed_by_step": {s: changed(s - 1, s) for s in (1, 2)},
      "checksums": hvd.allgather_object(checksum),
  }


if __name__ == "__main__":
  hvd.init()
  out = sys.argv[1]
  weights = {"fp32": allreduce_weights(False), "fp16": allreduce_weights(True)}
  fp16 = fp16_resnet(out)
  if hvd.rank() == 0:
    np.savez(os.path.join(out, "weights.npz"),
             **{f"{kind}_{i}": w for kind, ws in weights.items() for i, w in enumerate(ws)})
    with open(os.path.join(out, "fp16.json"), "w") as f:
      json.dump(fp16, f)
