"""The input pipelines (tf_rn50.data) on tiny datasets built by scripts/build_dataset.py.

Every example of the tiny datasets is its own class, so labels identify examples: the tests follow
each example through the real pipelines. 23 training and 13 validation examples, batch 4: neither
divides by ranks x batch.
"""
import os
import sys
import tempfile

import numpy as np
import skimage.data
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import build_dataset  # noqa: E402
import tf_rn50.data as data  # noqa: E402
from tf_rn50.data import records, sampling  # noqa: E402

N_TRAIN, N_VAL, BATCH, SIZE = 23, 13, 4, 32
# DALI vs tf.data on the same windows, in normalized units (1 unit = ~58 pixel levels): the
# decoders' chroma upsampling and the resizers' filters differ by a few levels, more at edges.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.02, 0.4


def write_tree(root, n_train, n_val, classes=None):
  """An ImageNet-style tree of small JPEG crops of two skimage photos, varied sizes and aspects.
  With classes=None every train image is its own class and val image i is in class i."""
  photos = [skimage.data.astronaut(), skimage.data.chelsea()]
  rng = np.random.default_rng(0)
  for split, n in (("train", n_train), ("val", n_val)):
    for i in range(n):
      label = i if classes is None else i % classes
      photo = photos[i % 2]
      h, w = rng.integers(24, 80, 2)
      y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
      folder = os.path.join(root, split, f"c{label:03d}")
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(photo[y:y + h, x:x + w]).save(os.path.join(folder, f"{i}.JPEG"), quality=90)


_DIRS = {}


def dataset_dir(data_format):
  """A tiny dataset in data_format, built once per test process."""
  if not _DIRS:
    root = tempfile.mkdtemp(prefix="tf_rn50_data_")
    write_tree(os.path.join(root, "images"), N_TRAIN, N_VAL)
    for f in ("recordio", "tfrecord"):
      build_dataset.build(os.path.join(root, "images"), os.path.join(root, f), f,
                          images_per_shard=10, workers=1)
      _DIRS[f] = os.path.join(root, f)
  return _DIRS[data_format]


def kwargs(data_format, **overrides):
  args = dict(data_dir=dataset_dir(data_format), data_format=data_format, batch_size=BATCH,
              image_size=SIZE, dtype="fp32", num_classes=N_TRAIN, threads=2)
  args.update(overrides)
  return args


def train_batches(backend, data_format, epochs, rank=0, size=1, start_epoch=0, **overrides):
  steps = sampling.steps_per_epoch(N_TRAIN, size, BATCH)
  dataset = data.train_dataset(backend, **kwargs(data_format, **overrides), rank=rank, size=size,
                               seed=7, steps_per_epoch=steps, num_examples=N_TRAIN,
                               start_epoch=start_epoch)
  return [(i.numpy(), l.numpy()) for i, l in dataset.take(epochs * steps)]


def eval_batches(backend, data_format, rank=0, size=1, **overrides):
  """One pass of the endless eval input."""
  dataset = data.eval_dataset(backend, **kwargs(data_format, **overrides), rank=rank, size=size,
                              num_examples=N_VAL)
  return [(i.numpy(), l.numpy()) for i, l in dataset.take(sampling.steps_per_epoch(N_VAL, size, BATCH))]


class SamplingTest(tf.test.TestCase):

  def test_train_order_covers_every_example_once_per_epoch_with_few_pads(self):
    for n, size, batch in ((23, 1, 4), (23, 2, 4), (23, 3, 5), (1000, 8, 7), (9, 9, 1)):
      steps = sampling.steps_per_epoch(n, size, batch)
      for epoch in range(3):
        orders = [sampling.train_order(n, r, size, 7, epoch, batch) for r in range(size)]
        seen = np.concatenate([np.unique(o) for o in orders])
        self.assertAllEqual(np.sort(seen), np.arange(n))         # each example in one rank, once
        for r, order in enumerate(orders):
          self.assertLen(order, steps * batch)
          start, stop = sampling.shard(n, r, size)
          self.assertIn(stop - start, (n // size, -(-n // size)))
          self.assertLess(len(order) - (stop - start), batch + 1)   # pads < batch + 1

  def test_train_order_is_a_fresh_permutation_each_epoch_and_depends_only_on_seed_and_epoch(self):
    first = sampling.train_order(100, 0, 1, 7, 0, 10)
    self.assertAllEqual(first, sampling.train_order(100, 0, 1, 7, 0, 10))
    self.assertNotAllEqual(first, sampling.train_order(100, 0, 1, 7, 1, 10))
    self.assertNotAllEqual(first, sampling.train_order(100, 0, 1, 8, 0, 10))

  def test_eval_order_is_every_example_exactly_once_in_equal_full_batches(self):
    for n, size, batch in ((13, 1, 4), (13, 2, 4), (13, 3, 4), (13, 20, 2), (50000, 8, 408)):
      orders = [sampling.eval_order(n, r, size, batch) for r in range(size)]
      self.assertLen({len(order) for order, _ in orders}, 1)
      self.assertEqual(len(orders[0][0]) % batch, 0)
      real = np.concatenate([order[is_real] for order, is_real in orders])
      self.assertAllEqual(real, np.arange(n))

  def test_steps_per_epoch_is_the_plans(self):
    import dataclasses
    from tf_rn50.flags import Plan
    for n, size, batch in ((1281167, 8, 408), (23, 2, 4), (400, 1, 32)):
      others = {f.name: 1 for f in dataclasses.fields(Plan)}       # fields steps do not use
      plan = Plan(**{**others, "num_ranks": size, "batch_size": batch, "train_examples": n})
      self.assertEqual(sampling.steps_per_epoch(n, size, batch), plan.steps_per_epoch)

  def test_random_crop_is_inside_the_image_with_area_and_aspect_in_range(self):
    rng = np.random.default_rng(0)
    for height, width in ((375, 500), (40, 300), (64, 64), (1, 1)):
      for _ in range(200):
        x, y, w, h = sampling.random_crop(height, width, rng.random((sampling.CROP_ATTEMPTS, 4)))
        self.assertTrue(0 <= x and x + w <= width and 0 <= y and y + h <= height and w > 0 and h > 0)
        if height * width > 1000 and max(width, height) / min(width, height) < 2:
          # rounding to pixels moves area and aspect a little off the nominal range
          self.assertBetween(w * h / (width * height), 0.045, 1.0)
          self.assertBetween(w / h, 0.73, 1.37)

  def test_center_crop_is_the_resize_then_crop_window(self):
    # 375x500 at 224: shorter side to 256 scales by 256/375, 224 crop = 328 source pixels.
    self.assertEqual(sampling.center_crop(375, 500, 224), ((500 - 328) // 2, (375 - 328) // 2, 328, 328))


class PipelineTest(tf.test.TestCase):

  def test_count_examples_reads_the_index(self):
    for data_format in ("recordio", "tfrecord"):
      self.assertEqual(data.count_examples(dataset_dir(data_format), data_format, "train"), N_TRAIN)
      self.assertEqual(data.count_examples(dataset_dir(data_format), data_format, "val"), N_VAL)

  def test_shapes_dtypes_and_value_ranges(self):
    low = min((0 - m) / s for m, s in zip(sampling.MEAN, sampling.STD))
    high = max((255 - m) / s for m, s in zip(sampling.MEAN, sampling.STD))
    for backend in ("dali", "tfdata"):
      for dtype, tf_dtype in (("fp32", tf.float32), ("fp16", tf.float16), ("bf16", tf.bfloat16)):
        for batches in (train_batches(backend, "recordio", 1, dtype=dtype),
                        eval_batches(backend, "tfrecord", dtype=dtype)):
          images, labels = batches[0]
          self.assertEqual(images.dtype, tf_dtype.as_numpy_dtype)
          self.assertEqual(images.shape, (BATCH, SIZE, SIZE, 3))
          self.assertEqual(labels.dtype, np.int32)
          self.assertEqual(labels.shape, (BATCH,))
          pixels = np.stack([b[0] for b in batches]).astype(np.float32)
          self.assertBetween(pixels.min(), low - 0.05, high)
          self.assertBetween(pixels.max(), low, high + 0.05)
          self.assertGreater(pixels.std(), 0.3)                    # real pictures, not constants

  def test_synthetic_shapes_dtypes_and_eval_padding(self):
    train = data.train_dataset("synthetic", data_dir=None, data_format="recordio", batch_size=BATCH,
                               image_size=SIZE, dtype="fp16", num_classes=10, rank=1, size=2,
                               seed=7, steps_per_epoch=3, num_examples=23)
    images, labels = next(iter(train))
    self.assertEqual((images.dtype, images.shape, labels.dtype), (tf.float16, (BATCH, SIZE, SIZE, 3), tf.int32))
    self.assertTrue(np.all((labels.numpy() >= 0) & (labels.numpy() < 10)))
    self.assertAllEqual(images, next(iter(train))[0])                # deterministic
    for size in (1, 2):
      labels = np.concatenate([l.numpy() for r in range(size) for _, l in data.eval_dataset(
          "synthetic", data_dir=None, data_format="recordio", batch_size=BATCH, image_size=SIZE,
          dtype="bf16", num_classes=10, rank=r, size=size, num_examples=N_VAL).take(
              sampling.steps_per_epoch(N_VAL, size, BATCH))])
      self.assertEqual(np.sum(labels >= 0), N_VAL)

  def test_train_epochs_see_every_example_and_pad_within_the_rank(self):
    for backend, data_format in (("dali", "recordio"), ("dali", "tfrecord"), ("tfdata", "tfrecord")):
      for size in (1, 2):
        steps = sampling.steps_per_epoch(N_TRAIN, size, BATCH)
        per_rank = [np.concatenate([l for _, l in train_batches(backend, data_format, 2, r, size)])
                    for r in range(size)]
        for epoch in range(2):
          epoch_labels = [labels[epoch * steps * BATCH:(epoch + 1) * steps * BATCH] for labels in per_rank]
          self.assertAllEqual(np.sort(np.concatenate([np.unique(l) for l in epoch_labels])),
                              np.arange(N_TRAIN), msg=f"{backend} {data_format} size {size}")
          for r, labels in enumerate(epoch_labels):
            start, stop = sampling.shard(N_TRAIN, r, size)
            self.assertEqual(len(labels) - len(np.unique(labels)), steps * BATCH - (stop - start))
        self.assertNotAllEqual(per_rank[0][:steps * BATCH], per_rank[0][steps * BATCH:])

  def test_eval_sees_every_example_exactly_once_in_equal_batches_on_every_rank(self):
    for backend, data_format in (("dali", "recordio"), ("dali", "tfrecord"), ("tfdata", "recordio")):
      for size in (1, 2, 3):
        per_rank = [eval_batches(backend, data_format, r, size) for r in range(size)]
        self.assertLen({len(b) for b in per_rank}, 1)
        labels = np.concatenate([l for batches in per_rank for _, l in batches])
        self.assertAllEqual(np.sort(labels[labels >= 0]), np.arange(N_VAL))
        self.assertTrue(np.all(labels[labels < 0] == -1))

  def test_eval_dataset_yields_the_same_pass_back_to_back(self):
    steps = sampling.steps_per_epoch(N_VAL, 1, BATCH)
    for backend in ("dali", "tfdata"):
      dataset = data.eval_dataset(backend, **kwargs("recordio"), rank=0, size=1, num_examples=N_VAL)
      batches = [(i.numpy(), l.numpy()) for i, l in dataset.take(2 * steps)]
      first, second = batches[:steps], batches[steps:]
      self.assertLen(first, len(second))
      for (a, la), (b, lb) in zip(first, second):
        self.assertAllEqual(la, lb)
        self.assertAllEqual(a, b)

  def test_resume_at_an_epoch_gives_the_batches_of_an_uninterrupted_run(self):
    steps = sampling.steps_per_epoch(N_TRAIN, 2, BATCH)
    for backend in ("dali", "tfdata"):
      uninterrupted = train_batches(backend, "tfrecord", 3, rank=1, size=2)
      resumed = train_batches(backend, "tfrecord", 1, rank=1, size=2, start_epoch=2)
      for (a, la), (b, lb) in zip(uninterrupted[2 * steps:], resumed):
        self.assertAllEqual(la, lb)
        self.assertAllEqual(a, b)                                      # crops and flips too

  def test_dali_and_tfdata_agree_on_the_same_images(self):
    for batches in ((eval_batches("dali", "recordio"), eval_batches("tfdata", "recordio")),
                    (train_batches("dali", "recordio", 1), train_batches("tfdata", "recordio", 1))):
      dali_images = np.concatenate([b[0] for b in batches[0]])
      tf_images = np.concatenate([b[0] for b in batches[1]])
      self.assertAllEqual(np.concatenate([b[1] for b in batches[0]]),
                          np.concatenate([b[1] for b in batches[1]]))
      difference = np.abs(dali_images - tf_images)
      self.assertLess(difference.mean(), MEAN_TOLERANCE)
      self.assertLess(difference.max(), MAX_TOLERANCE)

  def test_datasets_from_the_tools_give_the_source_labels(self):
    # The class folder c<k> of the source tree holds example k: both formats, both backends.
    expected = np.arange(N_VAL)
    for data_format in ("recordio", "tfrecord"):
      for backend in ("dali", "tfdata"):
        labels = np.concatenate([l for _, l in eval_batches(backend, data_format)])
        self.assertAllEqual(np.sort(labels[labels >= 0]), expected)
    rec = records.Records(dataset_dir("recordio"), "recordio", "val")
    tfr = records.Records(dataset_dir("tfrecord"), "tfrecord", "val")
    self.assertAllEqual([rec.read(i)[1] for i in range(N_VAL)], [tfr.read(i)[1] for i in range(N_VAL)])

  def test_bad_arguments_are_refused(self):
    with self.assertRaisesRegex(records.DataError, "empty shard: rank 0 of 24 gets none of the 23"):
      train_batches("tfdata", "recordio", 1, rank=0, size=24)
    with self.assertRaisesRegex(records.DataError, "has 23 examples, not 22"):
      data.train_dataset("tfdata", **kwargs("recordio"), rank=0, size=1, seed=0,
                         steps_per_epoch=6, num_examples=22)
    with self.assertRaisesRegex(ValueError, "steps_per_epoch=5 does not match"):
      data.train_dataset("dali", **kwargs("recordio"), rank=0, size=1, seed=0,
                         steps_per_epoch=5, num_examples=N_TRAIN)
