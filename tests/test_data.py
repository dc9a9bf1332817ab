"""The input pipelines (tf_rn50.data) on tiny datasets built by scripts/build_dataset.py, and on
datasets written by other tools (TF's own TFRecordWriter, an im2rec-style RecordIO packer).

Every example of the tiny datasets is its own class, so labels identify examples: the tests follow
each example through the real pipelines. 23 training and 13 validation examples, batch 4: neither
divides by ranks x batch. PATHS are the three ways to read: DALI fed by the exact sampler, DALI's own
readers, and the exact sampler's tf.data twin.
"""
import collections
import contextlib
import glob
import io
import os
import shutil
import struct
import sys
import tempfile
from unittest import mock

import numpy as np
import skimage.data
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import build_dataset  # noqa: E402
import tf_rn50.data as data  # noqa: E402
from tf_rn50.data import dali, records, sampling  # noqa: E402

N_TRAIN, N_VAL, BATCH, SIZE = 23, 13, 4, 32
PATHS = (("dali", "exact"), ("dali", "dali"), ("tfdata", "exact"))          # (backend, sampler)
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


def take(dataset, count):
  """The first `count` batches as numpy, through one iterator as the engine makes it."""
  batches = iter(dataset)
  return [tuple(x.numpy() for x in next(batches)) for _ in range(count)]


def train_batches(path, data_format, epochs, rank=0, size=1, start_epoch=0, n=N_TRAIN, **overrides):
  (backend, sampler), steps = path, sampling.steps_per_epoch(n, size, BATCH)
  dataset = data.train_dataset(backend, **kwargs(data_format, **overrides), rank=rank, size=size, seed=7,
                               steps_per_epoch=steps, num_examples=n, start_epoch=start_epoch, sampler=sampler)
  return take(dataset, epochs * steps)


def eval_batches(path, data_format, rank=0, size=1, passes=1, n=N_VAL, **overrides):
  backend, sampler = path
  dataset = data.eval_dataset(backend, **kwargs(data_format, **overrides), rank=rank, size=size,
                              num_examples=n, sampler=sampler)
  return take(dataset, passes * sampling.steps_per_epoch(n, size, BATCH))


def labels_of(batches):
  return np.concatenate([b[1] for b in batches])


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

  def test_random_crops_are_inside_the_image_with_area_and_aspect_in_range(self):
    rng = np.random.default_rng(0)
    for height, width in ((375, 500), (64, 64), (40, 300), (1, 1)):
      count = 500
      x, y, w, h = sampling.random_crops(np.full(count, height), np.full(count, width),
                                         rng.random((count, sampling.CROP_ATTEMPTS, 4))).T
      self.assertTrue(np.all((x >= 0) & (x + w <= width) & (y >= 0) & (y + h <= height) & (w > 0) & (h > 0)))
      if height >= 64:        # rounding to pixels moves area and aspect a little off the nominal range
        self.assertTrue(np.all((w * h / (width * height) >= 0.045) & (w / h >= 0.73) & (w / h <= 1.37)))
        self.assertGreater(len(set(zip(x, y, w, h))), 450)
    # No attempt fits 40x300 (u = 1: the largest area): the fallback is the centered 4:3 window.
    self.assertAllEqual(sampling.random_crops(np.array([40]), np.array([300]), np.ones((1, sampling.CROP_ATTEMPTS, 4))),
                        [[(300 - 53) // 2, 0, 53, 40]])

  def test_center_crops_are_the_resize_then_crop_window(self):
    # 375x500 at 224: shorter side to 256 scales by 256/375, 224 crop = 328 source pixels.
    self.assertAllEqual(sampling.center_crops(np.array([375, 500]), np.array([500, 375]), 224),
                        [[(500 - 328) // 2, (375 - 328) // 2, 328, 328],
                         [(375 - 328) // 2, (500 - 328) // 2, 328, 328]])

  def test_stored_sizes_replace_the_jpeg_headers_and_give_the_same_batches(self):
    root = tempfile.mkdtemp()
    for copy in ("sizes", "headers"):
      shutil.copytree(dataset_dir("tfrecord"), os.path.join(root, copy))
    for f in glob.glob(os.path.join(root, "headers", "*.sizes")):
      os.remove(f)
    stored, parsed = (records.Records(os.path.join(root, copy), "tfrecord", "train") for copy in ("sizes", "headers"))
    self.assertIsNone(parsed.shapes)
    self.assertAllEqual(stored.shapes, [records.jpeg_size(parsed.read(i)[0]) for i in range(N_TRAIN)])
    with mock.patch.object(records, "jpeg_size", side_effect=AssertionError("a JPEG header was parsed")):
      from_sizes = next(sampling.train_batches(stored, 1, 2, 7, 0, BATCH))
    from_headers = next(sampling.train_batches(parsed, 1, 2, 7, 0, BATCH))
    self.assertAllEqual(from_sizes[1], from_headers[1])
    self.assertEqual(from_sizes[0], from_headers[0])
    with open(records.sizes_path(stored.paths[0]), "a") as f:
      f.write("7 7\n")
    with self.assertRaisesRegex(records.DataError, f"{records.sizes_path(stored.paths[0])}: stale sizes"):
      records.Records(os.path.join(root, "sizes"), "tfrecord", "train")


class PlacementTest(tf.test.TestCase):
  """What differs on a GPU, decided without one (no GPU here): simulated device ids."""

  def test_cpu_and_gpu_placement(self):
    cpu = dali.placement(None, "fp32")
    self.assertEqual((cpu.tf_device, cpu.decoder, cpu.decoder_args, cpu.tf_type, cpu.tf_prefetch),
                     ("/cpu:0", "cpu", {}, tf.float32, dali.PREFETCH))
    gpu = dali.placement(3, "fp16", hw_decoder_load=0.7)
    self.assertEqual((gpu.device_id, gpu.tf_device, gpu.decoder, gpu.tf_type, gpu.tf_prefetch),
                     (3, "/gpu:0", "mixed", tf.float16, 0))
    self.assertEqual(gpu.decoder_args, dict(hw_decoder_load=0.7, preallocate_width_hint=5980,
                                            preallocate_height_hint=6430, device_memory_padding=211025920,
                                            host_memory_padding=140544512))
    self.assertEqual(dali.placement(None, "bf16").tf_type, tf.bfloat16)      # cast by tf.data on the CPU
    with self.assertRaisesRegex(ValueError, "use --dtype=fp16 on GPUs"):
      dali.placement(0, "bf16")

  def test_every_pipeline_puts_its_outputs_on_the_gpu_of_a_gpu_rank(self):
    from nvidia.dali import Pipeline
    found = records.Records(dataset_dir("recordio"), "recordio", "val")
    for device_id, device in ((None, "cpu"), (0, "gpu")):
      place = dali.placement(device_id, "fp16")
      with Pipeline(batch_size=BATCH, num_threads=1, device_id=device_id):   # the graph only: no CUDA needed
        for sampler in ("dali", "exact"):
          for train in (True, False):
            images, labels = dali._graph(found, place, sampler=sampler, train=train, image_size=SIZE, rank=0, size=1)
            self.assertEqual((images.device, labels.device), (device, device))

  def test_a_gpu_pipeline_gets_its_inputs_copied_to_its_gpu(self):
    """DALI's docs: a GPU DALIDatasetWithInputs takes inputs on its own device. The exact sampler's feed is made
    on the CPU, so a GPU rank copies it over (copy_to_device); a CPU rank passes it as it is. The dataset is
    recorded, not made: making it needs CUDA."""
    made = []
    recording = lambda pipeline, device_id, input_datasets, **args: made.append((device_id, input_datasets))
    samples = tf.data.Dataset.from_tensor_slices(tf.constant([b"ab", b"cd"])).map(
        lambda s: tf.io.decode_raw(s, tf.uint8))
    with mock.patch.object(dali.dali_tf.experimental, "DALIDatasetWithInputs", recording):
      for device_id in (None, 1):
        dali.dali_dataset("a pipeline", dali.placement(device_id, "fp16"), {"samples": (samples, False)})
    (cpu_id, cpu_inputs), (gpu_id, gpu_inputs) = made
    self.assertEqual((cpu_id, gpu_id), (None, 1))
    self.assertIs(cpu_inputs["samples"].dataset, samples)
    copied = gpu_inputs["samples"].dataset
    target = getattr(copied, "_target_device", None)
    self.assertEqual((type(copied).__name__, target), ("_CopyToDeviceDataset", "/gpu:0"))
    self.assertFalse(gpu_inputs["samples"].batch)
    self.assertEqual([list(x) for x in copied.as_numpy_iterator()], [[97, 98], [99, 100]])   # soft-placed here


class PipelineTest(tf.test.TestCase):

  def test_count_examples_reads_the_index(self):
    for data_format in ("recordio", "tfrecord"):
      self.assertEqual(data.count_examples(dataset_dir(data_format), data_format, "train"), N_TRAIN)
      self.assertEqual(data.count_examples(dataset_dir(data_format), data_format, "val"), N_VAL)

  def test_shapes_dtypes_and_value_ranges(self):
    low = min((0 - m) / s for m, s in zip(sampling.MEAN, sampling.STD))
    high = max((255 - m) / s for m, s in zip(sampling.MEAN, sampling.STD))
    dtypes = {"fp32": tf.float32, "fp16": tf.float16, "bf16": tf.bfloat16}
    for path, (train_dtype, eval_dtype) in zip(PATHS, (("fp32", "fp16"), ("fp16", "bf16"), ("bf16", "fp32"))):
      for batches, dtype in ((train_batches(path, "recordio", 1, dtype=train_dtype), train_dtype),
                             (eval_batches(path, "tfrecord", dtype=eval_dtype), eval_dtype)):
        images, labels = batches[0]
        self.assertEqual(images.dtype, dtypes[dtype].as_numpy_dtype)
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
      labels = np.concatenate([labels_of(take(data.eval_dataset(
          "synthetic", data_dir=None, data_format="recordio", batch_size=BATCH, image_size=SIZE, dtype="bf16",
          num_classes=10, rank=r, size=size, num_examples=N_VAL), sampling.steps_per_epoch(N_VAL, size, BATCH)))
          for r in range(size)])
      self.assertEqual(np.sum(labels >= 0), N_VAL)

  def test_train_epochs_see_every_example_and_pad_within_the_rank(self):
    # The MLPerf rule: every training example once per epoch, an epoch being steps_per_epoch batches
    # per rank; the few pads (< batch + 1 per rank) repeat examples of the rank's own shard.
    for path, data_format, sizes in ((PATHS[0], "recordio", (1, 2)), (PATHS[1], "recordio", (1, 2, 3)),
                                     (PATHS[1], "tfrecord", (2,)), (PATHS[2], "tfrecord", (2,))):
      for size in sizes:
        steps = sampling.steps_per_epoch(N_TRAIN, size, BATCH)
        per_rank = [labels_of(train_batches(path, data_format, 2, r, size)) for r in range(size)]
        for epoch in range(2):
          epoch_labels = [labels[epoch * steps * BATCH:(epoch + 1) * steps * BATCH] for labels in per_rank]
          self.assertAllEqual(np.sort(np.concatenate([np.unique(l) for l in epoch_labels])),
                              np.arange(N_TRAIN), msg=f"{path} {data_format} size {size}")
          for r, labels in enumerate(epoch_labels):
            start, stop = sampling.shard(N_TRAIN, r, size)
            self.assertEqual(len(labels) - len(np.unique(labels)), steps * BATCH - (stop - start))
        self.assertNotAllEqual(per_rank[0][:steps * BATCH], per_rank[0][steps * BATCH:])   # reshuffled

  def test_the_reader_epoch_is_the_plans_epoch(self):
    # DALI's pad_last_batch pads each shard to ceil(N / ranks) examples, then to a whole batch: the
    # reader's epoch per shard is steps_per_epoch batches, for every rank (no rank runs ahead).
    found = records.Records(dataset_dir("recordio"), "recordio", "train")
    for size in (1, 2, 3, 5):
      for rank in range(size):
        pipeline = dali.pipeline(dali._graph, None, batch_size=BATCH, threads=1, records=found,
                                 place=dali.placement(None, "fp32"), sampler="dali", train=True, image_size=SIZE,
                                 rank=rank, size=size)
        pipeline.build()
        meta = pipeline.reader_meta("Reader")
        self.assertEqual((meta["epoch_size"], meta["shard_id"], meta["number_of_shards"]), (N_TRAIN, rank, size))
        per_shard = meta["epoch_size_padded"] // size
        self.assertEqual(-(-per_shard // BATCH), sampling.steps_per_epoch(N_TRAIN, size, BATCH))

  def test_the_reader_shuffle_is_seeded_per_rank_and_start_epoch(self):
    first = labels_of(train_batches(PATHS[1], "recordio", 1, rank=1, size=2))
    self.assertAllEqual(first, labels_of(train_batches(PATHS[1], "recordio", 1, rank=1, size=2)))
    self.assertNotAllEqual(first, labels_of(train_batches(PATHS[1], "recordio", 1, rank=1, size=2, start_epoch=1)))

  def test_eval_sees_every_example_exactly_once_in_equal_batches_on_every_rank_pass_after_pass(self):
    for path in PATHS:
      for data_format, size in (("recordio", 1), ("tfrecord", 2), ("recordio", 3)):
        per_rank = [eval_batches(path, data_format, r, size, passes=2) for r in range(size)]
        steps = sampling.steps_per_epoch(N_VAL, size, BATCH)
        for passed in range(2):
          labels = np.concatenate([labels_of(batches[passed * steps:(passed + 1) * steps]) for batches in per_rank])
          self.assertAllEqual(np.sort(labels[labels >= 0]), np.arange(N_VAL), msg=f"{path} {data_format} {size}")
          self.assertTrue(np.all(labels[labels < 0] == -1))
        for batches in per_rank:                                   # the second pass repeats the first
          for (a, la), (b, lb) in zip(batches[:steps], batches[steps:]):
            self.assertAllEqual(la, lb)
            self.assertAllEqual(a, b)

  def test_resume_at_an_epoch_gives_the_batches_of_an_uninterrupted_run(self):
    steps = sampling.steps_per_epoch(N_TRAIN, 2, BATCH)
    for path in (PATHS[0], PATHS[2]):
      uninterrupted = train_batches(path, "tfrecord", 3, rank=1, size=2)
      resumed = train_batches(path, "tfrecord", 1, rank=1, size=2, start_epoch=2)
      for (a, la), (b, lb) in zip(uninterrupted[2 * steps:], resumed):
        self.assertAllEqual(la, lb)
        self.assertAllEqual(a, b)                                      # crops and flips too

  def test_dali_and_tfdata_agree_on_the_same_images(self):
    for batches in ((eval_batches(PATHS[0], "recordio"), eval_batches(PATHS[2], "recordio")),
                    (train_batches(PATHS[0], "recordio", 1), train_batches(PATHS[2], "recordio", 1))):
      dali_images = np.concatenate([b[0] for b in batches[0]])
      tf_images = np.concatenate([b[0] for b in batches[1]])
      self.assertAllEqual(labels_of(batches[0]), labels_of(batches[1]))
      difference = np.abs(dali_images - tf_images)
      self.assertLess(difference.mean(), MEAN_TOLERANCE)
      self.assertLess(difference.max(), MAX_TOLERANCE)

  def test_the_reader_eval_sees_the_exact_eval_images(self):
    # Same validation examples, read in another order, resized and center-cropped alike: the exact
    # path resizes the central window, the reader the whole image (then crops), so filters and
    # rounding differ a little, far less than between two different images.
    exact, reader = (eval_batches(path, "tfrecord") for path in (PATHS[0], PATHS[1]))
    by_label = [{l: i for i, l in zip(np.concatenate([b[0] for b in batches]), labels_of(batches)) if l >= 0}
                for batches in (exact, reader)]
    self.assertEqual(sorted(by_label[0]), sorted(by_label[1]))
    same = np.mean([np.abs(by_label[0][l] - by_label[1][l]).mean() for l in range(N_VAL)])
    other = np.mean([np.abs(by_label[0][l] - by_label[1][(l + 1) % N_VAL]).mean() for l in range(N_VAL)])
    self.assertLess(same, 0.15)
    self.assertLess(4 * same, other)

  def test_datasets_from_the_tools_give_the_source_labels(self):
    # The class folder c<k> of the source tree holds example k: both formats, every path.
    for data_format in ("recordio", "tfrecord"):
      for path in PATHS:
        labels = labels_of(eval_batches(path, data_format))
        self.assertAllEqual(np.sort(labels[labels >= 0]), np.arange(N_VAL))
    rec = records.Records(dataset_dir("recordio"), "recordio", "val")
    tfr = records.Records(dataset_dir("tfrecord"), "tfrecord", "val")
    self.assertAllEqual([rec.read(i)[1] for i in range(N_VAL)], [tfr.read(i)[1] for i in range(N_VAL)])

  def test_bad_arguments_are_refused(self):
    with self.assertRaisesRegex(records.DataError, "empty shard: rank 0 of 24 gets none of the 23"):
      train_batches(PATHS[2], "recordio", 1, rank=0, size=24)
    with self.assertRaisesRegex(records.DataError, "has 23 examples, not 22"):
      data.train_dataset("tfdata", **kwargs("recordio"), rank=0, size=1, seed=0,
                         steps_per_epoch=6, num_examples=22)
    with self.assertRaisesRegex(ValueError, "steps_per_epoch=5 does not match"):
      data.train_dataset("dali", **kwargs("recordio"), rank=0, size=1, seed=0,
                         steps_per_epoch=5, num_examples=N_TRAIN)
    with self.assertRaisesRegex(ValueError, "sampler 'dali' reads with DALI's readers: it needs the dali backend"):
      train_batches(("tfdata", "dali"), "recordio", 1)


def write_foreign(folder, examples):
  """The two formats as other tools write them: TF's ImageNet TFRecords (tf.io.TFRecordWriter, the
  standard feature keys (bounding boxes as floats) and shard names, 1-based labels, no DALI index), and an im2rec RecordIO (keys
  from 1000 on, a label vector [label, 7.0] (flag 2) on odd records, 0-based float labels)."""
  for split, name, shards in (("train", "train", 2), ("val", "validation", 1)):
    for k in range(shards):
      with tf.io.TFRecordWriter(os.path.join(folder, "tfrecord", f"{name}-{k:05d}-of-{shards:05d}")) as writer:
        for jpeg, label in examples[split][k::shards]:
          height, width = records.jpeg_size(jpeg)
          values = {"image/encoded": [jpeg], "image/class/label": [label + 1], "image/height": [height],
                    "image/width": [width], "image/format": [b"JPEG"], "image/class/synset": [b"n0000"],
                    "image/object/bbox/xmin": [0.1, 0.25]}
          kinds = {bytes: ("bytes_list", tf.train.BytesList), int: ("int64_list", tf.train.Int64List),
                   float: ("float_list", tf.train.FloatList)}
          feature = {key: tf.train.Feature(**{kinds[type(v[0])][0]: kinds[type(v[0])][1](value=v)})
                     for key, v in values.items()}
          writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with open(os.path.join(folder, "recordio", f"{split}.rec"), "wb") as rec, \
         open(os.path.join(folder, "recordio", f"{split}.idx"), "w") as idx:
      for key, (jpeg, label) in enumerate(examples[split], 1000):
        labels = [float(label), 7.0] if key % 2 else [float(label)]
        header = struct.pack("<IfQQ", len(labels) if len(labels) > 1 else 0, labels[0], key, 0)
        body = header + (struct.pack(f"<{len(labels)}f", *labels) if len(labels) > 1 else b"") + jpeg
        idx.write(f"{key}\t{rec.tell()}\n")
        rec.write(struct.pack("<II", 0xced7230a, len(body)) + body + b"\0" * (-len(body) % 4))


class ForeignDatasetTest(tf.test.TestCase):

  def test_datasets_written_by_other_tools_are_read_as_they_are_by_every_path(self):
    folder = tempfile.mkdtemp()
    for data_format in ("recordio", "tfrecord"):
      os.makedirs(os.path.join(folder, data_format))
    sources = {split: [(records.Records(dataset_dir("recordio"), "recordio", split).read(i)[0], i % 5)
                       for i in range(count)] for split, count in (("train", 11), ("val", 7))}
    write_foreign(folder, sources)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
      self.assertEqual(data.count_examples(os.path.join(folder, "tfrecord"), "tfrecord", "train"), 11)
    shard = os.path.join(folder, "tfrecord", "train-00001-of-00002")
    self.assertIn(f"{shard}: no DALI index; wrote {shard}.idx (5 records, tfrecord2idx format)", stderr.getvalue())
    for data_format in ("recordio", "tfrecord"):
      found = records.Records(os.path.join(folder, data_format), data_format, "val", num_classes=5)
      self.assertEqual(sorted(found.read(i)[:2] for i in range(7)), sorted(sources["val"]))
      for path in PATHS:
        args = dict(kwargs(data_format), data_dir=os.path.join(folder, data_format), num_classes=5)
        backend, sampler = path
        labels = labels_of([batch for rank in range(2) for batch in take(data.eval_dataset(
            backend, **args, rank=rank, size=2, num_examples=7, sampler=sampler), 1)])
        self.assertAllEqual(np.sort(labels[labels >= 0]), sorted(label for _, label in sources["val"]), msg=f"{path}")
        labels = labels_of(take(data.train_dataset(backend, **args, rank=0, size=1, seed=1, num_examples=11,
                                                   steps_per_epoch=3, sampler=sampler), 3))
        extra = collections.Counter(labels) - collections.Counter(label for _, label in sources["train"])
        self.assertEqual(sum(extra.values()), len(labels) - 11, msg=f"{path}")      # all 11, and 1 pad
