"""python -m tf_rn50.bench feed: what each input path hands DALI, per rank on one core."""
import os
import statistics
import tempfile
import time

from tf_rn50.bench.common import (PHOTOS, SKIP_BATCHES, figure, imagenet_like_jpegs, interleaved, ratio,
                                 timed_batches)

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


def cpu_and_wall():
  """(this process's CPU seconds, all threads; wall seconds): on one pinned core the first is the
  time the core worked for us, whatever else the machine runs."""
  import numpy as np
  return np.array([time.process_time(), time.perf_counter()])


def per_cpu_second(what, samples, seconds, unit):
  """The figure of `samples` per CPU second (seconds: [(cpu, wall)] per repetition), and the
  wall-clock rate beside it, which other processes' load lowers."""
  rate = figure(what, [samples / cpu for cpu, _ in seconds], unit)
  print(f"        (wall clock: {statistics.median(samples / wall for _, wall in seconds):.2f} {unit})", flush=True)
  return rate


def run(args):
  from tf_rn50 import data
  from tf_rn50.data import records, sampling
  num_files, distinct, batch_size, count, reps = (128, 16, 32, 4, 1) if args.quick else (1024, 64, 408, 10, 5)
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
