"""The training step, the eval step and the epoch loop.

One step: forward and backward under a GradientTape (XLA-compiled when asked), Horovod
allreduce-average of the gradients and the loss (fused into one grouped op; outside XLA, since Horovod ops
cannot sit inside a compiled cluster), then the optimizer update and the tally (also XLA-compiled when asked).

Nothing in a step comes back to the host. The loss, the non-finite count and the skipped updates stay in
device variables (`Tally`), the step counter is the optimizer's own `iterations`, and `fit` reads them all in
one copy every `log_every` steps and before each evaluation, so the host queues the next steps while the
device works.
"""
import horovod.tensorflow as hvd
import keras
import tensorflow as tf


class NonFiniteLoss(RuntimeError):
  pass


def inner_optimizer(optimizer):
  """The optimizer that owns the schedule and the step counter (LossScaleOptimizer wraps one)."""
  return optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer


class Tally:
  """What the train step leaves on the device for the host: the last step's loss (mean over ranks), the
  current run of consecutive non-finite losses, the step at which such a run first reached `limit`
  (0: never), and the updates skipped for non-finite gradients (fp16 loss scaling). `read` also returns the
  step counter and the loss scale (1 without loss scaling)."""

  def __init__(self, limit, optimizer):
    self.limit = limit
    self.loss = tf.Variable(0.0, trainable=False, name="tally_loss")
    self.nonfinite = tf.Variable(0, dtype=tf.int64, trainable=False, name="tally_nonfinite")
    self.limit_reached_at = tf.Variable(0, dtype=tf.int64, trainable=False, name="tally_limit_reached_at")
    self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="tally_skipped")
    self.variables = [self.loss, self.nonfinite, self.limit_reached_at, self.skipped]
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    shown = {"step": inner_optimizer(optimizer).iterations, "loss": self.loss, "nonfinite": self.nonfinite,
             "limit_reached_at": self.limit_reached_at, "skipped": self.skipped,
             "loss_scale": optimizer.dynamic_scale if loss_scaled else None}
    self.names = list(shown)
    self.floats = {"loss", "loss_scale"}
    # Traced now, during init; a concrete function is the cheapest call.
    self.stacked = tf.function(
        lambda: tf.stack([tf.cast(1.0 if v is None else v, tf.float64) for v in shown.values()])).get_concrete_function()

  def record(self, loss, step):
    """In the step: `loss` of 1-based step `step`."""
    self.loss.assign(loss)
    self.nonfinite.assign(tf.where(tf.math.is_finite(loss), tf.constant(0, tf.int64), self.nonfinite + 1))
    first_time = (self.nonfinite >= self.limit) & (self.limit_reached_at == 0)
    self.limit_reached_at.assign(tf.where(first_time, step, self.limit_reached_at))

  def read(self):
    """The loop's only blocking device-to-host copy: every value at once, as Python numbers."""
    values = self.stacked().numpy()
    return {name: float(x) if name in self.floats else int(x) for name, x in zip(self.names, values)}


def make_train_step(model, optimizer, tally, *, num_classes, label_smoothing, xla, fp16_allreduce):
  """Returns step(images, labels): one update, its loss and counts left in `tally`, nothing returned."""
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
  loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  inner = inner_optimizer(optimizer)
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
  def apply(grads, loss):
    done = tf.identity(inner.iterations.value)
    optimizer.apply(grads, variables)   # LossScaleOptimizer unscales, and skips non-finite gradients
    if loss_scaled:
      tally.skipped.assign_add(tf.cast(inner.iterations.value == done, tf.int64))
      # A skipped update still spends its step of the schedule: the LR at step s is lr(s), the one logged.
      inner.iterations.assign(done + 1)
    tally.record(loss, done + 1)

  @tf.function
  def step(images, labels):
    loss, grads = forward_backward(images, labels)
    if hvd.size() > 1:
      *grads, loss = hvd.grouped_allreduce([*grads, loss], op=hvd.Average, compression=compression)
    apply(grads, loss)

  return step


def make_eval_step(model, xla, top5=False):
  """Returns eval_step(images, labels) -> int32 [correct, counted], with top5 [correct, correct in the top 5,
  counted]; labels < 0 mark padding."""

  @tf.function(jit_compile=xla)
  def eval_step(images, labels):
    logits = model(images, training=False)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    counts = [tf.reduce_sum(tf.cast(predictions == labels, tf.int32))]
    if top5:   # top_k breaks ties by class order as argmax does, so top-1 hits are top-5 hits
      top = tf.math.top_k(logits, k=min(5, logits.shape[-1])).indices
      counts.append(tf.reduce_sum(tf.cast(tf.reduce_any(top == labels[:, None], axis=-1), tf.int32)))
    return tf.stack(counts + [tf.reduce_sum(tf.cast(labels >= 0, tf.int32))])

  return eval_step


def evaluate(eval_step, batches, steps):
  """Top-1 accuracy over every rank's share of the validation set, and the example count: the next
  `steps` batches of the endless eval iterator `batches`, one pass."""
  counts = tf.zeros([2], tf.int32)
  for _ in range(steps):
    counts += eval_step(*next(batches))
  correct, total = hvd.allreduce(counts, op=hvd.Sum).numpy().tolist()
  return correct / max(total, 1), total


def state_variables(model, optimizer):
  """Everything a run carries from step to step: weights, BN statistics, optimizer slots, loss scale."""
  return model.variables + optimizer.variables


def warm_up(step, eval_step, model, optimizer, tally, images_shape, images_dtype):
  """Runs one train and one eval step on zeros so tracing and XLA compilation happen before the
  timed run (MLPerf allows synthetic warm-up during init), then puts every variable back."""
  state = state_variables(model, optimizer) + tally.variables
  saved = [v.numpy() for v in state]
  images, labels = tf.zeros(images_shape, images_dtype), tf.zeros(images_shape[:1], tf.int32)
  step(images, labels)
  eval_step(images, labels)
  for variable, value in zip(state, saved):
    variable.assign(value)


def broadcast_state(model, optimizer):
  """Every rank starts from rank 0's weights, BN statistics and optimizer state."""
  if hvd.size() == 1:   # nothing to send, and the broadcast op costs ~2 s to build for 429 variables
    return
  # Keras 3 variables are not tf.Variables: broadcast their backing values.
  hvd.broadcast_variables([v.value for v in state_variables(model, optimizer)], root_rank=0)


def fit(step, tally, train_batches, *, model, plan, callbacks, start_epoch, log_every, learning_rate):
  """Runs epochs [start_epoch, plan.train_epochs) until a callback sets model.stop_training.

  The host only queues steps. It reads the tally (`Tally.read`, one device-to-host copy) after every
  global step that is a multiple of `log_every` and after the last step of each block (before its
  evaluation), and at no other time; at each read, on_train_batch_end(step, logs) gets the 1-based global
  step and logs {"loss", "skipped", "loss_scale" (fp16), "epoch", "step_in_epoch", ...}. on_epoch_begin/end
  get 0-based epochs, and on_train_end ends the run.

  The non-finite guard works on those reads, so it is late by design: a run of `tally.limit` non-finite
  losses stops training at the next read, up to `log_every` - 1 steps after the step that completed it.
  """
  model.stop_training = False
  global_step = start_epoch * plan.steps_per_epoch
  for epoch in range(start_epoch, plan.train_epochs):
    callbacks.on_epoch_begin(epoch)
    logs = {}
    for step_in_epoch in range(1, plan.steps_per_epoch + 1):
      step(*next(train_batches))
      global_step += 1
      if global_step % log_every and not (step_in_epoch == plan.steps_per_epoch and plan.ends_block(epoch)):
        continue
      logs = {**tally.read(), "epoch": epoch, "step_in_epoch": step_in_epoch}
      if logs["limit_reached_at"]:
        last = logs["limit_reached_at"]
        raise NonFiniteLoss(
            f"the loss was not finite for {tally.limit} consecutive steps, steps {last - tally.limit + 1}-{last} "
            f"(epoch {(last - 1) // plan.steps_per_epoch + 1}, learning rate {learning_rate(last):.6g} at step "
            f"{last}); seen at step {global_step} (the loop reads the loss every --log_every={log_every} steps)")
      callbacks.on_train_batch_end(global_step, logs)
    callbacks.on_epoch_end(epoch, logs)
    if model.stop_training:
      break
  callbacks.on_train_end()
