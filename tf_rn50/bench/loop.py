"""python -m tf_rn50.bench loop: the host time train.fit adds per step, and its blocking device-to-host reads."""
import contextlib
import tempfile
import time

from tf_rn50.bench.common import figure, interleaved, ratio


@contextlib.contextmanager
def counted_host_reads():
  """Counts every copy of an eager tensor's value into Python (.numpy(), float(), int(), bool(), format...):
  each one blocks the host until the device has computed that value. Yields the list of read shapes."""
  from tensorflow.python.framework import ops
  original, reads = ops._EagerTensorBase._numpy, []

  def counted(tensor):
    reads.append(tuple(tensor.shape))
    return original(tensor)
  ops._EagerTensorBase._numpy = counted
  try:
    yield reads
  finally:
    ops._EagerTensorBase._numpy = original


def run(args):
  import io
  import horovod.tensorflow as hvd
  import keras
  import tensorflow as tf
  from tf_rn50 import callbacks, optim, train
  from tf_rn50.flags import Plan
  from tf_rn50.mlperf import MLPerfLog
  hvd.init()   # one rank: no allreduce
  steps, reps, log_every, batch_size = (200, 1, 20, 8) if args.quick else (1000, 5, 20, 8)
  # 4 epochs a repetition, one block (no evaluation): the loop, its callbacks and its reads, nothing else.
  plan = Plan(num_ranks=1, batch_size=batch_size, train_examples=steps // 4 * batch_size, eval_examples=batch_size,
              train_epochs=4, warmup_epochs=1.0, eval_period=5, eval_offset=4)
  net = keras.Sequential([keras.Input((16,)), keras.layers.Dense(10)])
  schedule = optim.WarmupPolyDecay(0.1, plan.warmup_steps, plan.total_steps, 1e-4, 2.0)
  lars = optim.LARS(schedule)
  lars.build(net.trainable_variables)
  tally = train.Tally(10, lars)
  step = train.make_train_step(net, lars, tally, num_classes=10, label_smoothing=0.1, xla=False, fp16_allreduce=False)
  data = iter(tf.data.Dataset.from_tensors((tf.random.normal([batch_size, 16]), tf.range(batch_size) % 10)).repeat())
  eval_step = train.make_eval_step(net, xla=False)
  print(f"loop: a {net.count_params()}-parameter dense model, batch {batch_size}, LARS, train.make_train_step; "
        f"{plan.total_steps} steps ({plan.train_epochs} epochs, no evaluation) per repetition, --log_every={log_every}, "
        f"{reps} repetitions", flush=True)

  outside = []   # per fit repetition: seconds spent outside step() and next(), i.e. in the loop and its callbacks

  def with_fit():
    inside = [0.0]

    def timed(function):
      def call(*args):
        start = time.perf_counter()
        result = function(*args)
        inside[0] += time.perf_counter() - start
        return result
      return call
    with tempfile.TemporaryDirectory() as tensorboard, contextlib.redirect_stdout(io.StringIO()):
      engine = [callbacks.EvalCadence(eval_step=eval_step, eval_batches=None, eval_steps=1, plan=plan, target_accuracy=1.0,
                                      mllog=MLPerfLog(enabled=False)),
                callbacks.Checkpoint(None, plan, net, lars, keep=1, enabled=False),
                callbacks.Progress(plan=plan, learning_rate=schedule.at_step, tensorboard_dir=tensorboard, enabled=True)]
      start = time.perf_counter()
      train.fit(timed(step), tally, iter(timed(data.__next__), None), model=net, plan=plan, start_epoch=0,
                callbacks=keras.callbacks.CallbackList(engine, model=net), log_every=log_every,
                learning_rate=schedule.at_step)
      total = time.perf_counter() - start
    outside.append(total - inside[0])
    return total

  def bare():
    start = time.perf_counter()
    for _ in range(plan.total_steps):
      step(*next(data))
    tally.read()
    return time.perf_counter() - start

  seconds = interleaved({"fit": with_fit, "bare": bare}, reps)
  per_step = {name: [1e6 * s / plan.total_steps for s in samples] for name, samples in seconds.items()}
  fit = figure("loop: train.fit with its callbacks (eval cadence, checkpoint off, progress + TensorBoard)",
               per_step["fit"], "us/step")
  bare_loop = figure("loop: a bare Python loop over the same compiled step", per_step["bare"], "us/step")
  ratio("loop: train.fit / bare loop, time per step", fit / bare_loop)
  added = figure("loop: host time train.fit adds per step (all but step() and next())",
                 [1e6 * s / plan.total_steps for s in outside[1:]], "us/step")
  ratio("loop: goal (100 us/step) / host time train.fit adds per step", 100 / added, goal=1.0)
  with counted_host_reads() as reads:
    with_fit()
  per_1000 = 1000 * len(reads) / plan.total_steps
  figure("loop: blocking device-to-host reads of train.fit", [per_1000], "reads/1000 steps")
  ratio(f"loop: goal (1000/log_every = {1000 / log_every:g}) / reads per 1000 steps", 1000 / log_every / per_1000,
        goal=1.0)
