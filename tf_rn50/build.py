"""The network and optimizer of a run, built from the flags, fresh or from a checkpoint.

One recipe for training, `--mode=eval` and tf_rn50.export, so a checkpoint always meets the variables it
was saved from (the optimizer's too: a schedule or a fixed rate, a loss scale or none, change them).
"""
import os

import keras
import tensorflow as tf

from tf_rn50 import callbacks, model, optim, schedule
from tf_rn50.flags import FLAGS


def learning_rate_schedule(plan):
  return optim.WarmupPolyDecay(**schedule.run_arguments(plan))


def model_and_optimizer(schedule):
  """The ResNet-50 of the flags and its LARS (inside a loss-scale optimizer for fp16), built."""
  net = model.resnet50(FLAGS.num_classes, (FLAGS.image_size, FLAGS.image_size, 3), dtype=FLAGS.dtype,
                       bn_momentum=FLAGS.bn_momentum, bn_epsilon=FLAGS.bn_epsilon,
                       zero_init_residual=FLAGS.zero_init_residual)
  lars = optim.LARS(schedule, momentum=FLAGS.momentum, kernel_weight_decay=FLAGS.weight_decay,
                    eta=FLAGS.lars_eta, epsilon=FLAGS.lars_epsilon)
  optimizer = keras.optimizers.LossScaleOptimizer(lars) if FLAGS.dtype == "fp16" else lars
  optimizer.build(net.trainable_variables)
  return net, optimizer


def restore_trained(net, optimizer):
  """Restores --checkpoint_path (a checkpoint, or a folder: its newest), else the newest checkpoint in
  --output_dir/checkpoints; returns (the checkpoint, epochs done). Fails naming the flag and the place when
  there is no checkpoint."""
  if FLAGS.checkpoint_path:
    where, flag = FLAGS.checkpoint_path, f"--checkpoint_path={FLAGS.checkpoint_path}"
  else:
    where, flag = os.path.join(FLAGS.output_dir, "checkpoints"), f"--output_dir={FLAGS.output_dir}"
  try:
    epochs_done = callbacks.restore(where, net, optimizer)
  except FileNotFoundError as e:
    raise SystemExit(f"{flag}: {e}") from e
  if not epochs_done:
    raise SystemExit(f"{flag}: no checkpoint in {where}")
  return (tf.train.latest_checkpoint(where) if os.path.isdir(where) else where), epochs_done
