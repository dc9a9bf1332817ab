"""python -m tf_rn50.bench input: DALI and tf.data train pipelines vs decode-only."""
import os
import tempfile

from tf_rn50.bench.common import (PHOTOS, SKIP_BATCHES, figure, imagenet_like_jpegs, interleaved, ratio,
                                 timed_batches)


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


def run(args):
  from tf_rn50 import data
  from tf_rn50.data import sampling
  num_files, batch_size, count, reps = (48, 8, 3, 1) if args.quick else (320, 32, 8, 5)
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
