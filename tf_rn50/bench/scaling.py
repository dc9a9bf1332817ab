"""python -m tf_rn50.bench scaling: horovodrun -np 1 vs 2, and the gradient allreduce.

The workers run inside horovodrun as `python -m tf_rn50.bench _train_worker | _allreduce_worker`."""
import json
import os
import re
import statistics
import subprocess
import sys
import time

from tf_rn50.bench.common import figure, interleaved, ratio
from tf_rn50.bench.train import our_step


def horovodrun(ranks, worker, options, env=None):
  """Runs `python -m tf_rn50.bench <worker>` under horovodrun (Gloo, this host) and returns the
  JSON that rank 0 printed."""
  command = [sys.executable, "-m", "tf_rn50.horovodrun", "-np", str(ranks), "-H",
             f"localhost:{ranks}", "--gloo", sys.executable, "-m", "tf_rn50.bench", worker, *options]
  done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
  found = re.search(r"BENCH_RESULT (\{.*\})", done.stdout)
  if done.returncode or not found:
    raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
  return json.loads(found.group(1))


def start_rank():
  """hvd.init, then this rank on one core (local rank mod cores), TF on one thread."""
  import horovod.tensorflow as hvd
  import tensorflow as tf
  hvd.init()
  os.sched_setaffinity(0, {hvd.local_rank() % os.cpu_count()})
  tf.config.threading.set_intra_op_parallelism_threads(1)
  return hvd


def gradients(net):
  """Random tensors of the shapes of net's gradients (its trainable variables)."""
  import tensorflow as tf
  return [tf.random.normal(v.shape) for v in net.trainable_variables]


def compare_allreduces(hvd, grads, reps):
  """The gradients averaged by one grouped allreduce ("fused") or one allreduce per tensor ("unfused"),
  with and without fp16 compression, interleaved: {tensors, floats, seconds: {contender: [...]}}."""
  import tensorflow as tf

  # The gradients are arguments, not captured constants: Horovod names its ops after graph tensors.
  def fused(compression):
    return tf.function(lambda gs: hvd.grouped_allreduce(gs, op=hvd.Average, compression=compression))

  def unfused(compression):
    return tf.function(lambda gs: [hvd.allreduce(g, op=hvd.Average, compression=compression) for g in gs])

  def timed(allreduce):
    def run():
      start = time.perf_counter()
      allreduce(grads)
      return time.perf_counter() - start
    return run

  contenders = {f"{kind} {name}": timed(make(compression))
                for kind, make in (("fused", fused), ("unfused", unfused))
                for name, compression in (("fp32", hvd.Compression.none), ("fp16", hvd.Compression.fp16))}
  return {"tensors": len(grads), "floats": sum(int(g.shape.num_elements()) for g in grads),
          "seconds": interleaved(contenders, reps)}


def report(hvd, result):
  if hvd.rank() == 0:
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def train_worker(args):
  from tf_rn50 import model
  hvd = start_rank()
  net = model.resnet50(args.num_classes, (args.image_size, args.image_size, 3))
  contenders = {"step": our_step(net, False, batch_size=args.batch_size, image_size=args.image_size,
                                 steps=args.steps, num_classes=args.num_classes)}
  if hvd.size() > 1:   # the step's gradient allreduce alone, as often, interleaved with the steps: its share
    import tensorflow as tf
    grads = gradients(net)
    allreduce = tf.function(lambda gs: hvd.grouped_allreduce(gs, op=hvd.Average))

    def allreduces():
      start = time.perf_counter()
      for _ in range(args.steps):
        allreduce(grads)[0].numpy()
      return time.perf_counter() - start
    contenders["allreduce"] = allreduces
  seconds = {name: statistics.median(s) / args.steps for name, s in interleaved(contenders, args.reps).items()}
  rates = hvd.allgather_object(args.batch_size / seconds["step"])
  result = {"img_per_s": sum(rates), "per_rank": rates, "seconds": seconds}
  if args.compare_allreduces and hvd.size() > 1:
    result["allreduces"] = compare_allreduces(hvd, grads, args.reps)
  report(hvd, result)


def allreduce_worker(args):
  from tf_rn50 import model
  hvd = start_rank()
  report(hvd, compare_allreduces(hvd, gradients(model.resnet50(args.num_classes)), args.reps))


def run(args):
  batch_size, image_size = args.batch_size or (4 if args.quick else 32), args.image_size or (32 if args.quick else 64)
  steps, reps, rounds = (1, 1, 1) if args.quick else (3, 3, 2)
  options = ["--batch_size", str(batch_size), "--image_size", str(image_size), "--steps", str(steps),
             "--reps", str(reps), "--num_classes", "10" if args.quick else "1000"]
  if args.quick:   # the -np 2 run also compares the allreduces (runtime fusion on): one horovodrun fewer
    options.append("--compare_allreduces")
  print(f"scaling: horovodrun --gloo, one core and one TF thread per rank, fp32, batch {batch_size} per rank, "
        f"{image_size}x{image_size}, synthetic; each run the median of {reps} repetitions of {steps} steps; "
        f"{rounds} interleaved rounds of (-np 1, -np 2)", flush=True)
  runs = {1: [], 2: []}     # ranks: the results of its rounds
  for _ in range(rounds):
    for ranks, results in runs.items():
      results.append(horovodrun(ranks, "_train_worker", options))
  one = figure("scaling: horovodrun -np 1, total", [r["img_per_s"] for r in runs[1]], "img/s")
  two = figure("scaling: horovodrun -np 2, total", [r["img_per_s"] for r in runs[2]], "img/s")
  ratio("scaling: speed-up -np 2 / -np 1", two / one)
  ratio("scaling: weak-scaling efficiency (-np 2) / (2 x -np 1)", two / (2 * one))
  step = figure("scaling: -np 2, one step (with its gradient allreduce)",
                [1000 * r["seconds"]["step"] for r in runs[2]], "ms")
  alone = figure("scaling: -np 2, the step's gradient allreduce alone (fused, fp32)",
                 [1000 * r["seconds"]["allreduce"] for r in runs[2]], "ms")
  ratio("scaling: allreduce share of a -np 2 step", alone / step)

  # Horovod's runtime fuses small allreduces into one buffer (HOROVOD_FUSION_THRESHOLD, 128 MB by
  # default) on its own; a threshold of 0 shows what one collective per tensor really costs (not in --quick).
  if args.quick:
    allreduces("runtime fusion on", runs[2][-1]["allreduces"])
  else:
    for fusion, env in (("runtime fusion on", None), ("runtime fusion off", {"HOROVOD_FUSION_THRESHOLD": "0"})):
      allreduces(fusion, horovodrun(2, "_allreduce_worker", ["--reps", "7"], env))


def allreduces(fusion, result):
  """The lines of one allreduce comparison (compare_allreduces, -np 2)."""
  print(f"allreduce ({fusion}): {result['tensors']} gradient tensors of ResNet-50, {result['floats']:,} floats "
        f"({4 * result['floats'] / 2**20:.0f} MB fp32), -np 2", flush=True)
  ms = {name: figure(f"allreduce {fusion}: {name}", [1000 * s for s in seconds], "ms")
        for name, seconds in result["seconds"].items()}
  ratio(f"allreduce {fusion}: unfused / fused time, fp32", ms["unfused fp32"] / ms["fused fp32"])
  ratio(f"allreduce {fusion}: fp32 / fp16-compressed time, fused", ms["fused fp32"] / ms["fused fp16"])
