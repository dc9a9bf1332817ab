"""Train ResNet-50 v1.5 to the MLPerf target: flags -> plan -> data, model, optimizer -> fit -> log.

  horovodrun -np 8 python -m tf_rn50.main --flagfile=flags/nf5488.cfg
  horovodrun -np 2 -H localhost:2 --gloo python -m tf_rn50.main --flagfile=flags/smoke.cfg
  python -m tf_rn50.main --flagfile=flags/nf5488.cfg --dry_run=8    # the plan, no data touched
  python -m tf_rn50.main --flagfile=RUN/flags.cfg --mode=eval       # a trained checkpoint, evaluated once
"""
import gc
import json
import os
import sys

from absl import app

from tf_rn50 import flags as tf_rn50_flags

FLAGS = tf_rn50_flags.FLAGS


def dry_run(num_ranks):
  """The plan, its learning rates and the placement as JSON, in ~0.3 s: no TensorFlow is imported."""
  from tf_rn50 import devices, schedule
  plan = tf_rn50_flags.make_plan(num_ranks)
  landmarks = [1, plan.warmup_steps, plan.warmup_steps + 1, plan.total_steps]
  lr = {str(s): float(schedule.warmup_poly_decay(s, **schedule.run_arguments(plan))) for s in landmarks if s >= 1}
  ranks_per_host = min(num_ranks, FLAGS.gpus_per_host or num_ranks)
  placement = devices.host_plan(FLAGS.gpus_per_host, ranks_per_host, FLAGS.cores_per_host or devices.physical_cores())
  print(json.dumps({**plan.summary(), "lr": lr, "placement": placement}))


def check_writable(directory):
  """Fails before run_start, naming the folder, when the run could not save its results."""
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, ".write_test")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise SystemExit(f"--output_dir={FLAGS.output_dir}: cannot write to {directory}: {e}") from e


def count(split, given, flag):
  """The example count of a split: from the data's index, checked against --<flag> when given."""
  from tf_rn50 import data
  if FLAGS.data_backend == "synthetic":
    return given
  try:
    found = data.count_examples(FLAGS.data_dir, FLAGS.data_format, split)
  except data.records.DataError as e:
    raise SystemExit(f"--data_dir={FLAGS.data_dir}: {e}") from None
  if given and given != found:
    raise SystemExit(f"--{flag}={given} but {FLAGS.data_dir} holds {found} {split} examples")
  return found


def data_args(rank, size, place):
  """What the data layer's train and eval datasets take alike, from the flags and this rank's placement."""
  return dict(data_dir=FLAGS.data_dir, data_format=FLAGS.data_format, image_size=FLAGS.image_size,
              dtype=FLAGS.dtype, num_classes=FLAGS.num_classes, rank=rank, size=size, threads=FLAGS.dali_threads,
              sampler=FLAGS.data_sampler, hw_decoder_load=FLAGS.dali_hw_decoder_load, device_id=place.dali_device_id)


def evaluate_checkpoint(place, examples):
  """--mode=eval: restores a trained checkpoint and evaluates the whole validation set once on every rank.

  No MLPerf log (a run's mlperf.log stays the run's): rank 0 prints the result and one JSON line, and
  appends that line to --output_dir/eval.jsonl.
  """
  import time
  import horovod.tensorflow as hvd
  from tf_rn50 import build, data, train
  from tf_rn50.data import sampling
  rank0 = hvd.rank() == 0
  if rank0:
    check_writable(FLAGS.output_dir)
  plan = tf_rn50_flags.make_plan(hvd.size(), *examples)
  net, optimizer = build.model_and_optimizer(build.learning_rate_schedule(plan))
  checkpoint = build.restore_trained(net, optimizer) if rank0 else None
  checkpoint = hvd.broadcast_object(checkpoint, root_rank=0)
  train.broadcast_state(net, optimizer)
  batch_size = FLAGS.eval_batch_size or FLAGS.batch_size
  batches = iter(data.eval_dataset(FLAGS.data_backend, batch_size=batch_size, num_examples=plan.eval_examples,
                                   **data_args(hvd.rank(), hvd.size(), place)))
  eval_step = train.make_eval_step(net, FLAGS.xla, top5=True)
  start = time.time()
  # One pass of the endless eval input.
  counts = sum(eval_step(*next(batches)) for _ in range(sampling.steps_per_epoch(plan.eval_examples, hvd.size(),
                                                                                 batch_size)))
  top1, top5, total = hvd.allreduce(counts, op=hvd.Sum).numpy().tolist()
  if total != plan.eval_examples:
    raise RuntimeError(f"evaluation counted {total} examples, the validation set has {plan.eval_examples}")
  if rank0:
    result = {"mode": "eval", "checkpoint": checkpoint[0], "epochs_done": checkpoint[1], "top1": top1 / total,
              "top5": top5 / total, "examples": total, "ranks": hvd.size(), "data_dir": FLAGS.data_dir,
              "seconds": round(time.time() - start, 1)}
    print(f"eval of {checkpoint[0]} (after epoch {checkpoint[1]}): top-1 {top1 / total:.5f}  top-5 "
          f"{top5 / total:.5f}  on {total} examples", flush=True)
    print(json.dumps(result), flush=True)
    with open(os.path.join(FLAGS.output_dir, "eval.jsonl"), "a") as f:
      f.write(json.dumps(result) + "\n")
  return 0


def main(argv):
  del argv
  if FLAGS.dry_run:
    dry_run(FLAGS.dry_run)
    return 0
  # The data's example counts (its index files), checked against the flags before TensorFlow loads (~4 s):
  # a wrong --data_dir or count fails at once.
  examples = count("train", FLAGS.train_examples, "train_examples"), count("val", FLAGS.eval_examples, "eval_examples")

  import horovod.tensorflow as hvd
  hvd.init()
  import keras
  import tensorflow as tf
  from tf_rn50 import build, callbacks, data, devices, train
  from tf_rn50.data import sampling
  from tf_rn50.mlperf import C, MLPerfLog

  # One GPU per rank, its local rank's, for TF and DALI; decided before TF touches a device.
  try:
    place = devices.placement(hvd.local_rank(), hvd.local_size(), len(tf.config.list_physical_devices("GPU")),
                              os.environ, devices.physical_cores())
  except devices.PlacementError as e:
    raise SystemExit(f"rank {hvd.rank()}: {e}") from e
  devices.use(place)
  if place.gpu is not None:
    print(f"rank {hvd.rank()}: {place}", flush=True)
  else:   # ranks sharing a CPU host split its cores instead of oversubscribing them
    tf.config.threading.set_intra_op_parallelism_threads(max(1, os.cpu_count() // hvd.local_size()))
  if FLAGS.mode == "eval":
    return evaluate_checkpoint(place, examples)
  rank0 = hvd.rank() == 0
  checkpoint_dir = os.path.join(FLAGS.output_dir, "checkpoints")
  tensorboard_dir = os.path.join(FLAGS.output_dir, "tensorboard")
  if rank0:
    for directory in (FLAGS.output_dir, tensorboard_dir) + ((checkpoint_dir,) if FLAGS.checkpoint == "block" else ()):
      check_writable(directory)
  mllog = MLPerfLog(os.path.join(FLAGS.output_dir, "mlperf.log"), enabled=rank0)
  mllog.submission(FLAGS.submission_org, FLAGS.submission_platform, FLAGS.cache_clear)

  # --- init: everything built, compiled and started here; no step runs on real data before run_start.
  mllog.start(C.INIT_START)
  gc.disable()   # init makes ~400,000 objects that live as long as the run: no use walking them again and again
  mllog.event(C.SEED, FLAGS.seed)
  keras.utils.set_random_seed(FLAGS.seed)
  plan = tf_rn50_flags.make_plan(hvd.size(), *examples)
  if rank0:
    tf_rn50_flags.write_run_flagfile(FLAGS.output_dir, plan)
  schedule = build.learning_rate_schedule(plan)
  net, optimizer = build.model_and_optimizer(schedule)
  start_epoch = 0
  if FLAGS.resume and rank0:
    start_epoch = callbacks.restore(checkpoint_dir, net, optimizer)
    print(f"resuming after epoch {start_epoch} from {checkpoint_dir}", flush=True)
  start_epoch = hvd.broadcast_object(start_epoch, root_rank=0)
  train.broadcast_state(net, optimizer)

  # One train and one eval iterator for the whole run: their pipelines are built (and DALI's started) here,
  # and every evaluation takes the next pass of the endless eval input.
  eval_batch_size = FLAGS.eval_batch_size or FLAGS.batch_size
  shared = data_args(hvd.rank(), hvd.size(), place)
  train_batches = iter(data.train_dataset(FLAGS.data_backend, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                          steps_per_epoch=plan.steps_per_epoch, num_examples=plan.train_examples,
                                          start_epoch=start_epoch, **shared))
  eval_batches = iter(data.eval_dataset(FLAGS.data_backend, batch_size=eval_batch_size,
                                        num_examples=plan.eval_examples, **shared))
  tally = train.Tally(FLAGS.max_nonfinite_steps, optimizer)
  step = train.make_train_step(net, optimizer, tally, num_classes=FLAGS.num_classes,
                               label_smoothing=FLAGS.label_smoothing, xla=FLAGS.xla,
                               fp16_allreduce=FLAGS.fp16_allreduce)
  eval_step = train.make_eval_step(net, FLAGS.xla)
  train.warm_up(step, eval_step, net, optimizer, tally,
                [FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3], net.inputs[0].dtype)
  cadence = callbacks.EvalCadence(
      eval_step=eval_step, eval_batches=eval_batches, plan=plan, mllog=mllog, target_accuracy=FLAGS.target_accuracy,
      eval_steps=sampling.steps_per_epoch(plan.eval_examples, hvd.size(), eval_batch_size), start_epoch=start_epoch)
  checkpoint = callbacks.Checkpoint(checkpoint_dir, plan, net, optimizer, keep=FLAGS.keep_checkpoints,
                                    enabled=rank0 and FLAGS.checkpoint == "block")
  progress = callbacks.Progress(plan=plan, learning_rate=schedule.at_step, tensorboard_dir=tensorboard_dir,
                                enabled=rank0)
  callback_list = keras.callbacks.CallbackList([cadence, checkpoint, progress], model=net)

  mllog.event(C.MODEL_BN_SPAN, FLAGS.batch_size)
  mllog.hyperparameters(global_batch_size=plan.global_batch_size, base_lr=FLAGS.base_lr, end_lr=FLAGS.end_lr,
                        decay_power=FLAGS.lr_decay_power, decay_steps=plan.total_steps,
                        warmup_epochs=FLAGS.warmup_epochs, momentum=FLAGS.momentum,
                        weight_decay=FLAGS.weight_decay, epsilon=FLAGS.lars_epsilon)
  # Collections in the step loop skip everything made so far: a full one walked it all for ~0.4 s on a CPU.
  gc.collect()
  gc.freeze()
  gc.enable()
  mllog.end(C.INIT_STOP)

  # --- the timed run.
  mllog.start(C.RUN_START)
  mllog.event(C.TRAIN_SAMPLES, plan.train_examples)
  mllog.event(C.EVAL_SAMPLES, plan.eval_examples)
  try:
    train.fit(step, tally, train_batches, model=net, plan=plan, callbacks=callback_list, start_epoch=start_epoch,
              log_every=FLAGS.log_every, learning_rate=schedule.at_step)
  except train.NonFiniteLoss as e:
    mllog.end(C.RUN_STOP, status=C.ABORTED)
    print(f"stopped: {e}", file=sys.stderr, flush=True)
    return 1
  mllog.end(C.RUN_STOP, status=cadence.status)
  if rank0:
    print(f"run_stop: {cadence.status}, eval top-1 {cadence.accuracy}", flush=True)
  return 0 if cadence.status == C.SUCCESS else 1


def run():
  app.run(main)


if __name__ == "__main__":
  run()
