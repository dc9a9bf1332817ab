"""The DALI input pipeline as a tf.data.Dataset (nvidia.dali.plugin.tf), one per rank.

The examples come from our own records reader through `fn.external_source`
(experimental.DALIDatasetWithInputs), not from DALI's readers: sampling.py decides the epoch's global
permutation, this rank's slice, the padding and every crop window and flip, so an epoch and a
resumed epoch give the same batches, and the tf.data twin sees the same crops. DALI does the heavy
part: ROI decode of the window (`decoders.image_slice`), resize, mirror, normalize.

An external source has one output, so each sample travels as one uint8 vector: the 24 bytes of
meta (int32 label, x, y, width, height, flip) followed by the JPEG bytes.

The same code runs on GPU servers (decoder "mixed", DALI on the rank's GPU) and on CPUs
(decoder "cpu", device_id=None, everything on /cpu:0).
"""
import numpy as np
import tensorflow as tf
from nvidia.dali import fn, pipeline_def, types
import nvidia.dali.plugin.tf as dali_tf

from tf_rn50.data import sampling

META_BYTES = 6 * 4
OUTPUT_TYPES = {"fp32": (types.FLOAT, tf.float32), "fp16": (types.FLOAT16, tf.float16),
                "bf16": (types.FLOAT, tf.float32)}      # DALI has no bfloat16: cast after


def _packed(stream):
  """A tf.data.Dataset of meta + JPEG byte vectors from a zero-argument (jpeg, meta) generator."""
  def samples():
    for jpeg, meta in stream():
      yield np.concatenate([meta.view(np.uint8), np.frombuffer(jpeg, np.uint8)])
  return tf.data.Dataset.from_generator(samples, output_signature=tf.TensorSpec([None], tf.uint8))


def _pipeline(batch_size, image_size, dali_type, threads, device_id):
  @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id,
                prefetch_queue_depth=2)
  def pipeline():
    raw = fn.external_source(name="samples", dtype=types.UINT8, ndim=1, batch=False)
    meta = fn.reinterpret(fn.slice(raw, start=[0], shape=[META_BYTES], axes=[0]), dtype=types.INT32)
    jpeg = fn.slice(raw, start=[META_BYTES], end=[2**31 - 1], axes=[0],
                    out_of_bounds_policy="trim_to_shape")
    # TF's decoder ignores EXIF orientation; so does this one, for the same pixels in both.
    images = fn.decoders.image_slice(jpeg, meta[1:3], meta[3:5], axis_names="WH",
                                     device="cpu" if device_id is None else "mixed",
                                     output_type=types.RGB, adjust_orientation=False)
    images = fn.resize(images, size=[image_size, image_size], interp_type=types.INTERP_LINEAR,
                       antialias=True)
    images = fn.crop_mirror_normalize(images, mirror=meta[5], mean=list(sampling.MEAN),
                                      std=list(sampling.STD), dtype=dali_type, output_layout="HWC")
    labels = meta[0]
    return images, labels if device_id is None else labels.gpu()
  return pipeline()


def _dataset(stream, *, batch_size, image_size, dtype, rank, threads):
  gpus = tf.config.list_physical_devices("GPU")
  # On GPU servers the rank drives GPU (rank mod GPUs per node), which TF sees as its /gpu:0.
  device_id, device = (rank % len(gpus), "/gpu:0") if gpus else (None, "/cpu:0")
  dali_type, tf_type = OUTPUT_TYPES[dtype]
  with tf.device("/cpu:0"):
    samples = _packed(stream)
  if gpus:
    samples = samples.apply(tf.data.experimental.copy_to_device(device))
  with tf.device(device):
    dataset = dali_tf.experimental.DALIDatasetWithInputs(
        pipeline=_pipeline(batch_size, image_size, dali_type, threads, device_id),
        input_datasets={"samples": dali_tf.experimental.Input(samples, batch=False)},
        batch_size=batch_size, device_id=device_id,
        output_shapes=((batch_size, image_size, image_size, 3), (batch_size,)),
        output_dtypes=(tf_type, tf.int32))
  if dtype == "bf16":
    dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.bfloat16), labels))
  return dataset


def train_dataset(records, *, batch_size, image_size, dtype, rank, size, seed, start_epoch, threads):
  stream = lambda: sampling.train_stream(records, rank, size, seed, start_epoch, batch_size)
  return _dataset(stream, batch_size=batch_size, image_size=image_size, dtype=dtype, rank=rank,
                  threads=threads)


def eval_dataset(records, *, batch_size, image_size, dtype, rank, size, threads):
  stream = lambda: sampling.eval_stream(records, rank, size, batch_size, image_size)
  return _dataset(stream, batch_size=batch_size, image_size=image_size, dtype=dtype, rank=rank,
                  threads=threads)
