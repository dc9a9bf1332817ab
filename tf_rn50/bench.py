"""Benchmarks: our hot paths against what a user would write instead, side by side, as ratios.

  python -m tf_rn50.bench train [--quick]     # our train step vs keras.applications.ResNet50 + fit
  python -m tf_rn50.bench input [--quick]     # DALI vs tf.data train pipelines vs decode-only
  python -m tf_rn50.bench feed [--quick]      # samples/s each input path hands DALI, per rank on one core
  python -m tf_rn50.bench scaling [--quick]   # horovodrun -np 1 vs -np 2; gradient allreduce
  python -m tf_rn50.bench loop [--quick]      # host time train.fit adds per step; its device-to-host reads
  python -m tf_rn50.bench infer [--quick]     # the exported model vs keras.applications.ResNet50, inference

Contenders run in turn (A, B, C, A, B, C, ...) after one warm-up each, so they share the machine's
load; a figure is the median of the repetitions. Output lines: "machine", "load", then
"figure <what> <median> <unit> (reps: ...)" and "ratio <what> <value>x [goal ...]".
docs/benchmarks.md holds the figures of this machine.
"""
import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

# skimage's bundled colour photos (no download), the sources of the input benchmark's JPEGs.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SKIP_BATCHES = 3       # input: untimed batches on a fresh iterator before timing (start-up, queues)


def machine():
  import horovod
  import keras
  import nvidia.dali
  import tensorflow as tf
  with open("/proc/cpuinfo") as f:
    cpuinfo = f.read()
  cpu = re.search(r"model name\s*:\s*(.*)", cpuinfo)
  isa = [x for x in ("avx512f", "avx512_bf16", "amx_bf16") if re.search(rf"\b{x}\b", cpuinfo)]
  print(f"machine: {cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores "
        f"({' '.join(isa) or 'no avx512'}), python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, horovod {horovod.__version__}, dali {nvidia.dali.__version__}", flush=True)


def load():
  print(f"load: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average (1/5/15 min) "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def interleaved(contenders, reps):
  """{name: run}, run() -> seconds of one timed repetition. Warms each up once, then runs them in
  turn `reps` times; returns {name: [seconds, ...]}."""
  for run in contenders.values():
    run()
  seconds = {name: [] for name in contenders}
  for _ in range(reps):
    for name, run in contenders.items():
      seconds[name].append(run())
  return seconds


def figure(what, samples, unit):
  print(f"figure  {what:<66} {statistics.median(samples):10.2f} {unit}  "
        f"(reps: {' '.join(f'{s:.2f}' for s in samples)})", flush=True)
  return statistics.median(samples)


def ratio(what, value, goal=None):
  verdict = "" if goal is None else f"  [goal >= {goal:.2f}: {'met' if value >= goal else 'MISSED'}]"
  print(f"ratio   {what:<66} {value:10.2f}x{verdict}", flush=True)


# --- train: our step vs keras.applications + model.fit -------------------------------------------

def batches(net, batch_size, image_size, num_classes):
  """The same synthetic tf.data input for every path, in the dtype of the model's input."""
  from tf_rn50.data import synthetic
  dtype = {"float32": "fp32", "bfloat16": "bf16"}[net.inputs[0].dtype]
  return synthetic.train_dataset(batch_size=batch_size, image_size=image_size, dtype=dtype,
                                 num_classes=num_classes, rank=0, seed=0)


def our_step(precision, xla, *, batch_size, image_size, steps, num_classes):
  """run() -> seconds for `steps` steps of the engine: our model, LARS, train.make_train_step,
  one read of the tally at the end as train.fit does every --log_every steps."""
  from tf_rn50 import model, optim, train
  net = model.resnet50(num_classes, (image_size, image_size, 3), dtype=precision)
  lars = optim.LARS(optim.WarmupPolyDecay(1.0, 10, 1000, 1e-4, 2))
  lars.build(net.trainable_variables)
  tally = train.Tally(10, lars)
  step = train.make_train_step(net, lars, tally, num_classes=num_classes, label_smoothing=0.1, xla=xla,
                               fp16_allreduce=False)
  data = iter(batches(net, batch_size, image_size, num_classes))

  def run():
    start = time.perf_counter()
    for _ in range(steps):
      step(*next(data))
    tally.read()
    return time.perf_counter() - start
  return run


def keras_fit(net, xla, *, batch_size, image_size, steps, num_classes):
  """run() -> seconds for `steps` steps of net.fit with SGD, as a Keras user would train."""
  import keras
  net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=xla)
  data = batches(net, batch_size, image_size, num_classes)

  def run():
    start = time.perf_counter()
    net.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start
  return run


def bench_train(args):
  import horovod.tensorflow as hvd
  import keras
  from tf_rn50 import model
  hvd.init()   # one rank: the step skips the allreduce, as the engine does on one device
  size = dict(batch_size=args.batch_size or (8 if args.quick else 32),
              image_size=args.image_size or (32 if args.quick else 64),
              steps=2 if args.quick else 3, num_classes=10 if args.quick else 1000)
  reps = 2 if args.quick else 3
  settings = [("fp32", False)] if args.quick else [(p, x) for p in ("fp32", "bf16") for x in (False, True)]
  print(f"train: batch {size['batch_size']}, {size['image_size']}x{size['image_size']}, {size['num_classes']} "
        f"classes, {size['steps']} steps per repetition, {reps} repetitions; synthetic tf.data input", flush=True)
  ours_vs_keras = {}
  for precision, xla in settings:
    keras.utils.clear_session()
    shape = (size["image_size"], size["image_size"], 3)
    ours = model.resnet50(size["num_classes"], shape, dtype=precision)
    keras.mixed_precision.set_global_policy(model.POLICIES[precision])
    theirs = keras.applications.ResNet50(weights=None, input_shape=shape, classes=size["num_classes"],
                                         classifier_activation=None)
    keras.mixed_precision.set_global_policy("float32")
    seconds = interleaved({
        "ours": our_step(precision, xla, **size),
        "ours_fit": keras_fit(ours, xla, **size),
        "keras": keras_fit(theirs, xla, **size),
    }, reps)
    setting = f"{precision} xla={'on' if xla else 'off'}"
    images = size["batch_size"] * size["steps"]
    rate = {name: figure(f"train {setting}: {label}", [images / s for s in seconds[name]], "img/s")
            for name, label in (("ours", "our step (v1.5, LARS, train.make_train_step)"),
                                ("ours_fit", "our model (v1.5) under model.fit, SGD"),
                                ("keras", "keras.applications.ResNet50 (v1), model.fit, SGD"))}
    ratio(f"train {setting}: our step / keras.applications fit", rate["ours"] / rate["keras"], goal=1.0)
    ratio(f"train {setting}: loop: our step / our model under fit", rate["ours"] / rate["ours_fit"])
    ratio(f"train {setting}: model: our model / keras.applications, both fit", rate["ours_fit"] / rate["keras"])
    ours_vs_keras[setting] = (rate["keras"], rate["ours"] / rate["keras"])
  best = max(ours_vs_keras, key=lambda s: ours_vs_keras[s][0])
  ratio(f"train at the Keras path's best setting ({best}): ours / keras", ours_vs_keras[best][1], goal=1.3)


# --- input: DALI and tf.data train pipelines vs decode-only ---------------------------------------

def imagenet_like_jpegs(count, seed=0, noise=0.0, quality=90):
  """`count` ImageNet-like JPEGs (about 500x375, 3 in 4 landscape, 4:2:0) cropped from skimage's
  photos, as [(bytes, label)]; the label is the photo. Gaussian pixel noise of `noise` levels adds
  the fine detail of real photos (and their file sizes) to the smooth upscaled crops."""
  import io
  import numpy as np
  import skimage.data
  from PIL import Image
  photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
  rng = np.random.default_rng(seed)
  made = []
  for i in range(count):
    label = i % len(photos)
    photo = photos[label]
    width, height = int(rng.integers(450, 551)), int(rng.integers(340, 411))
    if rng.random() < 0.25:
      width, height = height, width
    scale = min(photo.width / width, photo.height / height) * rng.uniform(0.6, 1.0)
    w, h = round(width * scale), round(height * scale)
    x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
    image = photo.crop((x, y, x + w, y + h)).resize((width, height), Image.BILINEAR)
    if noise:
      pixels = np.asarray(image, np.float32) + rng.normal(0, noise, (height, width, 3))
      image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=quality)
    made.append((jpeg.getvalue(), label))
  return made


def write_jpegs(folder, count, seed=0):
  """`count` ImageNet-like JPEGs (quality 90, about 40 KB) as folder/train.rec/.idx."""
  from tf_rn50.data import records
  writer = records.RecordioWriter(os.path.join(folder, "train"))
  for jpeg, label in imagenet_like_jpegs(count, seed):
    writer.write(jpeg, label)
  writer.close()


def train_windows(folder, batch_size):
  """A stream of (JPEG bytes, meta) in the train order, with the train crop windows in meta, read
  the way the train pipelines read it (tf_rn50.data.sampling)."""
  from tf_rn50.data import records, sampling
  found = records.Records(folder, "recordio", "train")

  def stream():
    for jpegs, metas in sampling.train_batches(found, 0, 1, 0, 0, batch_size):
      yield from zip(jpegs, metas)
  return stream


def samples(stream):
  import tensorflow as tf
  return tf.data.Dataset.from_generator(
      stream, output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([6], tf.int32)))


def dali_decode_only(stream, batch_size, threads, window):
  """DALI CPU decode of the whole JPEG, or of the train window only (ROI), no augmentation;
  yields each batch's image shapes and metas."""
  import nvidia.dali.plugin.tf as dali_tf
  import tensorflow as tf
  from nvidia.dali import fn, pipeline_def, types

  @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=None, prefetch_queue_depth=2)
  def pipeline():
    jpeg = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1, batch=False)
    meta = fn.external_source(name="metas", dtype=types.INT32, ndim=1, batch=False)
    decode = dict(device="cpu", output_type=types.RGB, adjust_orientation=False)
    if window:
      images = fn.decoders.image_slice(jpeg, meta[1:3], meta[3:5], axis_names="WH", **decode)
    else:
      images = fn.decoders.image(jpeg, **decode)
    return images.shape(), meta

  with tf.device("/cpu:0"):
    inputs = {"jpegs": samples(stream).map(lambda jpeg, meta: tf.io.decode_raw(jpeg, tf.uint8)),
              "metas": samples(stream).map(lambda jpeg, meta: meta)}
    return dali_tf.experimental.DALIDatasetWithInputs(
        pipeline=pipeline(), batch_size=batch_size, device_id=None,
        input_datasets={name: dali_tf.experimental.Input(d, batch=False) for name, d in inputs.items()},
        output_shapes=((batch_size, 3), (batch_size, 6)), output_dtypes=(tf.int64, tf.int32))


def tf_decode_only(stream, batch_size, threads, window):
  """tf.io decode of the whole JPEG, or of the train window only (ROI), with the tf.data
  pipeline's decoder settings, no augmentation; yields each batch's image shapes."""
  import tensorflow as tf

  def decode(jpeg, meta):
    if window:
      return tf.shape(tf.io.decode_and_crop_jpeg(jpeg, tf.stack([meta[2], meta[1], meta[4], meta[3]]),
                                                 channels=3, dct_method="INTEGER_ACCURATE"))
    return tf.shape(tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE"))
  return samples(stream).map(decode, num_parallel_calls=threads, deterministic=True).batch(batch_size).prefetch(2)


def timed_batches(dataset, count, clock=time.perf_counter):
  """run() -> seconds (of `clock`) for `count` batches of a fresh iterator, after SKIP_BATCHES
  untimed ones; the iterator (and its background work) ends with the repetition."""
  def run():
    batches = iter(dataset)
    for _ in range(SKIP_BATCHES):
      next(batches)
    start = clock()
    for _ in range(count):
      next(batches)
    return clock() - start
  return run


def cpu_and_wall():
  """(this process's CPU seconds, all threads; wall seconds): on one pinned core the first is the
  time the core worked for us, whatever else the machine runs."""
  import numpy as np
  return np.array([time.process_time(), time.perf_counter()])


def bench_input(args):
  from tf_rn50 import data
  from tf_rn50.data import sampling
  num_files, batch_size, count, reps = (48, 8, 3, 2) if args.quick else (320, 32, 8, 5)
  image_size, cores = 224, os.cpu_count()
  with tempfile.TemporaryDirectory() as folder:
    write_jpegs(folder, num_files)
    megabytes = os.path.getsize(os.path.join(folder, "train.rec")) / 2**20
    print(f"input: {num_files} JPEGs of ~500x375 ({megabytes:.1f} MB RecordIO), batch {batch_size}, output "
          f"{image_size}x{image_size} fp32, {cores} threads per pipeline, {count} timed batches per "
          f"repetition after {SKIP_BATCHES} untimed, {reps} repetitions", flush=True)
    train = dict(data_dir=folder, data_format="recordio", batch_size=batch_size, image_size=image_size,
                 dtype="fp32", num_classes=len(PHOTOS), rank=0, size=1, seed=0, num_examples=num_files,
                 steps_per_epoch=sampling.steps_per_epoch(num_files, 1, batch_size), threads=cores)
    stream = train_windows(folder, batch_size)
    pipelines = {
        "dali": ("DALI train (ROI decode, resize, flip, normalize)", data.train_dataset("dali", **train)),
        "dali_roi": ("DALI decode-only, train window (ROI)", dali_decode_only(stream, batch_size, cores, True)),
        "dali_full": ("DALI decode-only, whole image", dali_decode_only(stream, batch_size, cores, False)),
        "tfdata": ("tf.data train (ROI decode, resize, flip, normalize)", data.train_dataset("tfdata", **train)),
        "tf_roi": ("tf.data decode-only, train window (ROI)", tf_decode_only(stream, batch_size, cores, True)),
        "tf_full": ("tf.data decode-only, whole image", tf_decode_only(stream, batch_size, cores, False)),
    }
    seconds = interleaved({name: timed_batches(dataset, count) for name, (_, dataset) in pipelines.items()}, reps)
  images = count * batch_size
  rate = {name: figure(f"input: {label}", [images / s / cores for s in seconds[name]], "img/s/core")
          for name, (label, _) in pipelines.items()}
  ratio("input: DALI train / DALI whole-image decode-only", rate["dali"] / rate["dali_full"], goal=1.0)
  ratio("input: tf.data train / DALI train", rate["tfdata"] / rate["dali"], goal=0.8)
  ratio("input: DALI ROI decode / whole-image decode", rate["dali_roi"] / rate["dali_full"])
  ratio("input: DALI train / ROI decode (the cost of resize, flip, normalize)", rate["dali"] / rate["dali_roi"])
  ratio("input: tf.data ROI decode / whole-image decode", rate["tf_roi"] / rate["tf_full"])
  ratio("input: tf.data train / tf.data whole-image decode-only", rate["tfdata"] / rate["tf_full"])


# --- feed: what each input path hands DALI, per rank on one core ----------------------------------

FEED_GOAL = 12000      # samples/s per rank on one core: over 4x the seed's 2,830 img/s per A100
FEED_JPEG = dict(noise=11, quality=95)     # ~110 KB at ~500x375, like ImageNet's JPEGs


def write_feed_dataset(folder, jpegs, images_per_shard):
  """[(JPEG, label)] as folder/recordio and folder/tfrecord (shards), indexes and sizes included;
  the val split is the same files (symbolic links)."""
  from tf_rn50.data import records
  paths = {"recordio": [os.path.join(folder, "recordio", "train.rec")]}
  os.makedirs(os.path.join(folder, "recordio"))
  os.makedirs(os.path.join(folder, "tfrecord"))
  writers = [records.RecordioWriter(paths["recordio"][0][:-len(".rec")])]
  shards = -(-len(jpegs) // images_per_shard)
  paths["tfrecord"] = [os.path.join(folder, "tfrecord", f"train-{k:05d}-of-{shards:05d}") for k in range(shards)]
  writers += [records.TfrecordWriter(path) for path in paths["tfrecord"]]
  for i, (jpeg, label) in enumerate(jpegs):
    writers[0].write(jpeg, label)
    writers[1 + i * shards // len(jpegs)].write(jpeg, label)
  for writer in writers:
    writer.close()
  for data_format, files in paths.items():
    for path in files:
      for name in (path, records.index_path(path), records.sizes_path(path)):
        base = os.path.basename(name)
        os.symlink(base, os.path.join(os.path.dirname(name), base.replace("train", records.SPLITS[data_format]["val"])))


def feed_dataset(found, sampler, train, batch_size):
  """The path's feed alone, no decoding: DALI gets the samples as the full pipeline does and hands
  back each one's label and JPEG byte count."""
  import tensorflow as tf
  from nvidia.dali import fn
  from tf_rn50.data import dali

  def graph():
    jpegs, labels, _ = dali.feed(found, sampler, train=train, rank=0, size=1)
    return labels, jpegs.shape()
  pipe = dali.pipeline(graph, None, batch_size=batch_size, threads=1, seed=0)
  inputs = dali.feed_inputs(found, sampler, train=train, rank=0, size=1, batch_size=batch_size, image_size=224)
  return dali.dali_dataset(pipe, dali.placement(None, "fp32"), inputs, batch_size=batch_size,
                           output_shapes=((batch_size,), (batch_size, 1)), output_dtypes=(tf.int32, tf.int64))


class ExactSampler:
  """The exact sampler alone, in Python (order, crop windows, reads), as an iterable of batches."""

  def __init__(self, found, batch_size):
    self.found, self.batch_size = found, batch_size

  def __iter__(self):
    from tf_rn50.data import sampling
    return sampling.train_batches(self.found, 0, 1, 0, 0, self.batch_size)


def per_cpu_second(what, samples, seconds, unit):
  """The figure of `samples` per CPU second (seconds: [(cpu, wall)] per repetition), and the
  wall-clock rate beside it, which other processes' load lowers."""
  rate = figure(what, [samples / cpu for cpu, _ in seconds], unit)
  print(f"        (wall clock: {statistics.median(samples / wall for _, wall in seconds):.2f} {unit})", flush=True)
  return rate


def bench_feed(args):
  from tf_rn50 import data
  from tf_rn50.data import records, sampling
  num_files, distinct, batch_size, count, reps = (128, 16, 32, 4, 2) if args.quick else (1024, 64, 408, 10, 5)
  full_batch, full_count = (4, 2) if args.quick else (32, 6)
  with tempfile.TemporaryDirectory() as folder:
    jpegs = imagenet_like_jpegs(distinct, **FEED_JPEG)
    write_feed_dataset(folder, [jpegs[i % len(jpegs)] for i in range(num_files)], images_per_shard=128)
    kilobytes = sum(len(j) for j, _ in jpegs) / len(jpegs) / 1024
    print(f"feed: per rank on one core (this process pinned to CPU {min(os.sched_getaffinity(0))}, DALI num_threads "
          f"1); rates per second of this process's CPU time, so that the machine's other load does not count; "
          f"{num_files} JPEGs of ~500x375 averaging {kilobytes:.0f} KB ({distinct} distinct) as RecordIO and "
          f"TFRecord (shards of 128); batch {batch_size}, {count} timed batches per repetition "
          f"after {SKIP_BATCHES} untimed, {reps} repetitions. Feed: the samples handed to DALI's decoder, "
          "nothing decoded", flush=True)
    found = {(f, split): records.Records(os.path.join(folder, f), f, split)
             for f in ("recordio", "tfrecord") for split in ("train", "val")}
    paths = [(sampler, split, f) for sampler in ("dali", "exact") for split in ("train", "val")
             for f in ("recordio", "tfrecord")]
    contenders = {(sampler, split, f): timed_batches(feed_dataset(found[f, split], sampler, split == "train",
                                                                  batch_size), count, cpu_and_wall)
                  for sampler, split, f in paths}
    contenders["sampler"] = timed_batches(ExactSampler(found["recordio", "train"], batch_size), count, cpu_and_wall)
    seconds = interleaved(contenders, reps)
    rate = {(sampler, split, f): per_cpu_second(f"feed: {sampler} sampler, {'train' if split == 'train' else 'eval'}, "
                                                f"{f}", count * batch_size, seconds[sampler, split, f], "samples/s")
            for sampler, split, f in paths}
    per_cpu_second("feed: the exact sampler alone (Python: order, crops, reads)", count * batch_size,
                   seconds["sampler"], "samples/s")
    ratio(f"feed: dali sampler, train, recordio (flags/nf5488.cfg) / {FEED_GOAL:,} samples/s",
          rate["dali", "train", "recordio"] / FEED_GOAL, goal=1.0)
    ratio(f"feed: exact sampler, train, recordio / {FEED_GOAL:,} samples/s",
          rate["exact", "train", "recordio"] / FEED_GOAL, goal=1.0)

    print(f"full train pipeline on this core: decode + crop, resize to 224, flip, normalize to fp32 (DALI decoder "
          f"\"cpu\"), batch {full_batch}, {full_count} timed batches, {reps} repetitions", flush=True)
    train = dict(batch_size=full_batch, image_size=224, dtype="fp32", num_classes=len(PHOTOS), rank=0, size=1,
                 seed=0, num_examples=num_files, steps_per_epoch=sampling.steps_per_epoch(num_files, 1, full_batch),
                 threads=1)
    full = {(sampler, f): timed_batches(data.train_dataset("dali", data_dir=os.path.join(folder, f), data_format=f,
                                                           sampler=sampler, **train), full_count, cpu_and_wall)
            for sampler in ("dali", "exact") for f in ("recordio", "tfrecord")}
    seconds = interleaved(full, reps)
    rate = {(sampler, f): per_cpu_second(f"feed: full train pipeline, {sampler} sampler, {f}", full_count * full_batch,
                                         seconds[sampler, f], "img/s") for sampler, f in full}
    ratio("feed: full train pipeline, dali sampler / exact sampler, recordio",
          rate["dali", "recordio"] / rate["exact", "recordio"])


# --- scaling: horovodrun -np 1 vs 2, and the gradient allreduce -----------------------------------

def horovodrun(ranks, worker, options, env=None):
  """Runs `python -m tf_rn50.bench <worker>` under horovodrun (Gloo, this host) and returns the
  JSON that rank 0 printed."""
  command = [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "-np", str(ranks), "-H",
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


def train_worker(args):
  hvd = start_rank()
  contenders = {"step": our_step("fp32", False, batch_size=args.batch_size, image_size=args.image_size,
                                 steps=args.steps, num_classes=args.num_classes)}
  if hvd.size() > 1:   # the step's gradient allreduce alone, as often, interleaved with the steps: its share
    import tensorflow as tf
    from tf_rn50 import model
    shape = (args.image_size, args.image_size, 3)
    grads = [tf.random.normal(v.shape) for v in model.resnet50(args.num_classes, shape).trainable_variables]
    allreduce = tf.function(lambda gs: hvd.grouped_allreduce(gs, op=hvd.Average))

    def allreduces():
      start = time.perf_counter()
      for _ in range(args.steps):
        allreduce(grads)[0].numpy()
      return time.perf_counter() - start
    contenders["allreduce"] = allreduces
  seconds = {name: statistics.median(s) / args.steps for name, s in interleaved(contenders, args.reps).items()}
  rates = hvd.allgather_object(args.batch_size / seconds["step"])
  if hvd.rank() == 0:
    print("BENCH_RESULT " + json.dumps({"img_per_s": sum(rates), "per_rank": rates, "seconds": seconds}), flush=True)


def allreduce_worker(args):
  hvd = start_rank()
  import tensorflow as tf
  from tf_rn50 import model
  grads = [tf.random.normal(v.shape) for v in model.resnet50().trainable_variables]

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
  seconds = interleaved(contenders, args.reps)
  if hvd.rank() == 0:
    print("BENCH_RESULT " + json.dumps({"tensors": len(grads), "floats": sum(int(g.shape.num_elements()) for g in grads),
                                        "seconds": seconds}), flush=True)


def bench_scaling(args):
  batch_size, image_size = args.batch_size or (4 if args.quick else 32), args.image_size or (32 if args.quick else 64)
  steps, reps, rounds = (2, 2, 1) if args.quick else (3, 3, 2)
  options = ["--batch_size", str(batch_size), "--image_size", str(image_size), "--steps", str(steps),
             "--reps", str(reps), "--num_classes", "10" if args.quick else "1000"]
  print(f"scaling: horovodrun --gloo, one core and one TF thread per rank, fp32, batch {batch_size} per rank, "
        f"{image_size}x{image_size}, synthetic; each run the median of {reps} repetitions of {steps} steps; "
        f"{rounds} interleaved rounds of (-np 1, -np 2)", flush=True)
  rates, seconds = {1: [], 2: []}, []
  for _ in range(rounds):
    for ranks in rates:
      result = horovodrun(ranks, "_train_worker", options)
      rates[ranks].append(result["img_per_s"])
    seconds.append(result["seconds"])
  one = figure("scaling: horovodrun -np 1, total", rates[1], "img/s")
  two = figure("scaling: horovodrun -np 2, total", rates[2], "img/s")
  ratio("scaling: speed-up -np 2 / -np 1", two / one)
  ratio("scaling: weak-scaling efficiency (-np 2) / (2 x -np 1)", two / (2 * one))
  step = figure("scaling: -np 2, one step (with its gradient allreduce)", [1000 * s["step"] for s in seconds], "ms")
  alone = figure("scaling: -np 2, the step's gradient allreduce alone (fused, fp32)",
                 [1000 * s["allreduce"] for s in seconds], "ms")
  ratio("scaling: allreduce share of a -np 2 step", alone / step)

  # Horovod's runtime fuses small allreduces into one buffer (HOROVOD_FUSION_THRESHOLD, 128 MB by
  # default) on its own; a threshold of 0 shows what one collective per tensor really costs
  # (not in --quick).
  fusions = (("runtime fusion on", None), ("runtime fusion off", {"HOROVOD_FUSION_THRESHOLD": "0"}))
  for fusion, env in fusions[:1] if args.quick else fusions:
    result = horovodrun(2, "_allreduce_worker", ["--reps", "2" if args.quick else "7"], env)
    print(f"allreduce ({fusion}): {result['tensors']} gradient tensors of ResNet-50, {result['floats']:,} floats "
          f"({4 * result['floats'] / 2**20:.0f} MB fp32), -np 2", flush=True)
    ms = {name: figure(f"allreduce {fusion}: {name}", [1000 * s for s in seconds], "ms")
          for name, seconds in result["seconds"].items()}
    ratio(f"allreduce {fusion}: unfused / fused time, fp32", ms["unfused fp32"] / ms["fused fp32"])
    ratio(f"allreduce {fusion}: fp32 / fp16-compressed time, fused", ms["fused fp32"] / ms["fused fp16"])


# --- loop: the host time train.fit adds per step, and its blocking device-to-host reads ------------

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


def bench_loop(args):
  import io
  import horovod.tensorflow as hvd
  import keras
  import tensorflow as tf
  from tf_rn50 import callbacks, optim, train
  from tf_rn50.flags import Plan
  from tf_rn50.mlperf import MLPerfLog
  hvd.init()   # one rank: no allreduce
  steps, reps, log_every, batch_size = (200, 3, 20, 8) if args.quick else (1000, 5, 20, 8)
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


# --- infer: the exported model vs keras.applications.ResNet50 ----------------------------------------

def encoded_photos(count, shorter, seed=0):
  """`count` JPEGs (quality 90) cropped from skimage's photos, 4:3 landscape, `shorter` pixels high."""
  import io
  import numpy as np
  import skimage.data
  from PIL import Image
  rng = np.random.default_rng(seed)
  jpegs = []
  for i in range(count):
    photo = Image.fromarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
    h = int(photo.height * rng.uniform(0.6, 1.0))
    w = min(photo.width, h * 4 // 3)
    x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
    out = io.BytesIO()
    photo.crop((x, y, x + w, y + h)).resize((shorter * 4 // 3, shorter), Image.BILINEAR).save(out, "JPEG", quality=90)
    jpegs.append(out.getvalue())
  return jpegs


def timed_calls(call, count):
  """run() -> (seconds, CPU seconds of this process's threads) for `count` calls of call(), each result read
  back to the host. CPU time does not count the waits for a core, so it holds under others' load."""
  def run():
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
      [value.numpy() for value in call().values()]
    return time.perf_counter() - start, time.process_time() - start_cpu
  return run


def bench_infer(args):
  import keras
  import tensorflow as tf
  from tf_rn50 import export, model
  from tf_rn50.data import sampling
  batch_size, image_size = args.batch_size or (4 if args.quick else 32), args.image_size or (32 if args.quick else 224)
  num_classes, calls, reps = (10, 1, 2) if args.quick else (1000, 1, 9)
  print(f"infer: batch {batch_size}, {image_size}x{image_size}, {num_classes} classes, float32, {calls} batches per "
        f"repetition, {reps} repetitions; an untrained model through tf_rn50.export.write", flush=True)
  shape, shorter = (image_size, image_size, 3), round(image_size * sampling.EVAL_RESIZE)
  images = tf.random.stateless_normal([batch_size, *shape], [0, 0])      # as the eval pipeline gives them
  pixels = tf.cast(tf.random.stateless_uniform([batch_size, shorter, shorter * 4 // 3, 3], [0, 1], 0, 256, tf.int32),
                   tf.uint8)                                            # as a client decodes them
  jpegs = tf.constant(encoded_photos(batch_size, shorter))
  with tempfile.TemporaryDirectory() as folder:
    export.write(model.resnet50(num_classes, shape), [(str(c), "") for c in range(num_classes)], folder)
    ours = keras.saving.load_model(os.path.join(folder, "model.keras"))
    served = tf.saved_model.load(os.path.join(folder, "saved_model"))
  theirs = keras.applications.ResNet50(weights=None, input_shape=shape, classes=num_classes)   # ends in softmax
  ours_probabilities = tf.function(lambda x: {"probabilities": tf.nn.softmax(ours(x, training=False))})
  keras_probabilities = tf.function(lambda x: {"probabilities": theirs(x, training=False)})
  seconds = interleaved({
      "ours": timed_calls(lambda: ours_probabilities(images), calls),
      "keras": timed_calls(lambda: keras_probabilities(images), calls),
      "images": timed_calls(lambda: served.signatures["images"](images=pixels), calls),
      "jpegs": timed_calls(lambda: served.signatures["serving_default"](jpegs=jpegs), calls),
  }, reps)
  labels = (("ours", "model.keras (v1.5), normalized images"),
            ("keras", "keras.applications.ResNet50 (v1), normalized images"),
            ("images", "SavedModel, uint8 images (+ crop, resize, normalize)"),
            ("jpegs", "SavedModel, JPEG files (+ decode, crop, resize, normalize)"))
  for clock, unit in ((0, "img/s"), (1, "img/cpu-s")):     # images per second, per CPU-second
    rate = {name: figure(f"infer ({unit}): {label}", [batch_size * calls / s[clock] for s in seconds[name]], unit)
            for name, label in labels}
    ratio(f"infer ({unit}): exported model.keras / keras.applications.ResNet50", rate["ours"] / rate["keras"])
    ratio(f"infer ({unit}): SavedModel on uint8 images / model.keras (preprocessing)", rate["images"] / rate["ours"])
    ratio(f"infer ({unit}): SavedModel on JPEGs / on uint8 images (decoding)", rate["jpegs"] / rate["images"])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark", choices=["train", "input", "feed", "scaling", "loop", "infer", "_train_worker",
                                              "_allreduce_worker"],
                      help="The _workers run inside horovodrun, started by `scaling`.")
  parser.add_argument("--quick", action="store_true", help="Tiny sizes, fp32 XLA-off only: a smoke run.")
  parser.add_argument("--batch_size", type=int, default=0, help="train/scaling/infer: images per rank (0: default).")
  parser.add_argument("--image_size", type=int, default=0, help="train/scaling/infer: square size (0: default).")
  parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
  parser.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
  parser.add_argument("--num_classes", type=int, default=1000, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.benchmark.startswith("_"):
    {"_train_worker": train_worker, "_allreduce_worker": allreduce_worker}[args.benchmark](args)
    return
  if args.benchmark == "feed":         # per rank on one core: before any thread starts, so all inherit it
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  machine()
  load()
  {"train": bench_train, "input": bench_input, "feed": bench_feed, "scaling": bench_scaling,
   "loop": bench_loop, "infer": bench_infer}[args.benchmark](args)
  load()


if __name__ == "__main__":
  main()
