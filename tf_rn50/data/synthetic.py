"""Synthetic input: deterministic random batches made by TF ops, no files, no decoding.

For benchmarks and smoke runs. Shapes, dtypes and the eval padding (label -1) are those of the
real pipelines; images look like normalized pixels (standard normal).
"""
import tensorflow as tf

from tf_rn50.data import sampling
from tf_rn50.data.tfdata import DTYPES


def _images(batch_size, image_size, dtype, seed):
  images = tf.random.stateless_normal([batch_size, image_size, image_size, 3], seed=seed)
  return tf.cast(images, DTYPES[dtype])


def train_dataset(*, batch_size, image_size, dtype, num_classes, rank, seed):
  """One random batch for this rank, repeated forever."""
  images = _images(batch_size, image_size, dtype, [seed, rank])
  labels = tf.random.stateless_uniform([batch_size], [seed, rank + 1], 0, num_classes, tf.int32)
  return tf.data.Dataset.from_tensors((images, labels)).repeat()


def eval_dataset(*, batch_size, image_size, dtype, num_classes, rank, size, num_examples):
  """Endless passes over num_examples fake examples sharded like the real eval: example i has label
  i % num_classes; pads have -1."""
  images = _images(batch_size, image_size, dtype, [0, rank])   # the eval contract has no seed
  order, real = sampling.eval_order(num_examples, rank, size, batch_size)
  labels = tf.where(real, order % num_classes, -1)
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1, batch_size])
  return tf.data.Dataset.from_tensor_slices(labels).map(lambda batch_labels: (images, batch_labels)).repeat()
