"""The training step, the eval step and the epoch loop.

One step: forward and backward under a GradientTape (XLA-compiled when asked), Horovod
allreduce-average of the gradients (fused into one grouped op; outside XLA, since Horovod ops
cannot sit inside a compiled cluster), then the optimizer update (also XLA-compiled when asked).
"""
import math

import horovod.tensorflow as hvd
import keras
import tensorflow as tf


class NonFiniteLoss(RuntimeError):
  pass


def make_train_step(model, optimizer, *, num_classes, label_smoothing, xla, fp16_allreduce):
  """Returns step(images, labels) -> float32 loss of this rank's batch (before the update)."""
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
  loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  compression = hvd.Compression.fp16 if fp16_allreduce else hvd.Compression.none
  variables = model.trainable_variables

  @tf.function(jit_compile=xla)
  def forward_backward(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = loss_fn(tf.one_hot(labels, num_classes), logits)
      scaled_loss = optimizer.scale_loss(loss) if loss_scaled else loss
    return loss, tape.gradient(scaled_loss, variables)

  @tf.function(jit_compile=xla)
  def apply(grads):
    optimizer.apply(grads, variables)   # LossScaleOptimizer unscales and skips non-finite steps

  @tf.function
  def step(images, labels):
    loss, grads = forward_backward(images, labels)
    if hvd.size() > 1:
      grads = hvd.grouped_allreduce(grads, op=hvd.Average, compression=compression)
    apply(grads)
    return loss

  return step


def make_eval_step(model, xla):
  """Returns eval_step(images, labels) -> int32 [correct, counted]; labels < 0 mark padding."""

  @tf.function(jit_compile=xla)
  def eval_step(images, labels):
    predictions = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
    correct = tf.reduce_sum(tf.cast(predictions == labels, tf.int32))
    return tf.stack([correct, tf.reduce_sum(tf.cast(labels >= 0, tf.int32))])

  return eval_step


def evaluate(eval_step, dataset):
  """Top-1 accuracy over every rank's share of the validation set, and the example count."""
  counts = tf.zeros([2], tf.int32)
  for images, labels in dataset:
    counts += eval_step(images, labels)
  correct, total = (int(c) for c in hvd.allreduce(counts, op=hvd.Sum))
  return correct / max(total, 1), total


def state_variables(model, optimizer):
  """Everything a run carries from step to step: weights, BN statistics, optimizer slots, loss scale."""
  return model.variables + optimizer.variables


def warm_up(step, eval_step, model, optimizer, images_shape, images_dtype):
  """Runs one train and one eval step on zeros so tracing and XLA compilation happen before the
  timed run (MLPerf allows synthetic warm-up during init), then puts every variable back."""
  state = state_variables(model, optimizer)
  saved = [v.numpy() for v in state]
  images, labels = tf.zeros(images_shape, images_dtype), tf.zeros(images_shape[:1], tf.int32)
  step(images, labels)
  eval_step(images, labels)
  for variable, value in zip(state, saved):
    variable.assign(value)


def broadcast_state(model, optimizer):
  """Every rank starts from rank 0's weights, BN statistics and optimizer state."""
  # Keras 3 variables are not tf.Variables: broadcast their backing values.
  hvd.broadcast_variables([v.value for v in state_variables(model, optimizer)], root_rank=0)


def fit(step, train_batches, *, model, plan, callbacks, start_epoch, max_nonfinite_steps, learning_rate):
  """Runs epochs [start_epoch, plan.train_epochs) until a callback sets model.stop_training.

  Callbacks get on_epoch_begin/end(epoch) with 0-based epochs and on_train_batch_end(step) with
  the 1-based global step and logs {"loss", "epoch", "step_in_epoch"}.
  """
  model.stop_training = False
  global_step = start_epoch * plan.steps_per_epoch
  nonfinite = 0
  for epoch in range(start_epoch, plan.train_epochs):
    callbacks.on_epoch_begin(epoch)
    for step_in_epoch in range(1, plan.steps_per_epoch + 1):
      images, labels = next(train_batches)
      loss = float(step(images, labels))
      global_step += 1
      nonfinite = 0 if math.isfinite(loss) else nonfinite + 1
      if nonfinite >= max_nonfinite_steps:
        raise NonFiniteLoss(f"loss was {loss} for {nonfinite} consecutive steps, up to step {global_step} "
                            f"(epoch {epoch + 1}, learning rate {learning_rate(global_step):.6g})")
      callbacks.on_train_batch_end(global_step, {"loss": loss, "epoch": epoch, "step_in_epoch": step_in_epoch})
    callbacks.on_epoch_end(epoch, {})
    if model.stop_training:
      break
