"""The tf.data twin of dali.py's exact sampler: the same sampling batches, decoded and augmented by TF ops.

Same order, same crop windows and flips as DALI; pixels differ only by the decoders' and
resizers' rounding (see tests/test_data.py for the measured tolerance). Eval is endless, as DALI's.
"""
import tensorflow as tf

from tf_rn50.data import sampling

DTYPES = {"fp32": tf.float32, "fp16": tf.float16, "bf16": tf.bfloat16}


def _transform(image_size, dtype):
  mean = tf.constant(sampling.MEAN, tf.float32)
  std = tf.constant(sampling.STD, tf.float32)

  def transform(jpeg, meta):
    x, y, width, height = meta[1], meta[2], meta[3], meta[4]
    # ROI decode of the window; INTEGER_ACCURATE is libjpeg's default, as in DALI's decoder.
    image = tf.io.decode_and_crop_jpeg(jpeg, tf.stack([y, x, height, width]), channels=3,
                                       dct_method="INTEGER_ACCURATE")
    image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    image = tf.cond(meta[5] > 0, lambda: tf.image.flip_left_right(image), lambda: image)
    return tf.cast((image - mean) / std, DTYPES[dtype]), meta[0]
  return transform


def _dataset(batches, *, batch_size, image_size, dtype, threads):
  dataset = tf.data.Dataset.from_generator(
      batches, output_signature=(tf.TensorSpec([None], tf.string), tf.TensorSpec([None, 6], tf.int32)))
  dataset = dataset.unbatch().map(_transform(image_size, dtype), num_parallel_calls=threads, deterministic=True)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(2)


def train_dataset(records, *, batch_size, image_size, dtype, rank, size, seed, start_epoch, threads):
  batches = lambda: sampling.train_batches(records, rank, size, seed, start_epoch, batch_size)
  return _dataset(batches, batch_size=batch_size, image_size=image_size, dtype=dtype, threads=threads)


def eval_dataset(records, *, batch_size, image_size, dtype, rank, size, threads):
  batches = lambda: sampling.eval_batches(records, rank, size, batch_size, image_size)
  return _dataset(batches, batch_size=batch_size, image_size=image_size, dtype=dtype, threads=threads)
