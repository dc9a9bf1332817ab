"""The DALI input pipelines as tf.data.Datasets (nvidia.dali.plugin.tf), one per rank.

Two samplers (--data_sampler) decide which examples a rank reads and how they are augmented:

dali: DALI's own C++ readers, as NVIDIA's MLPerf GPU submissions read: `fn.readers.mxnet` on
  train.rec/.idx, `fn.readers.tfrecord` on the shards with their DALI indexes. A rank reads its shard
  (shard_id/num_shards: the same contiguous slices as sampling.shard) and sticks to it. pad_last_batch
  repeats a shard's last example up to ceil(N / ranks) examples and then to a whole batch, so every
  shard's reader epoch is exactly ceil(ceil(N / ranks) / batch) batches: the plan's steps per epoch.
  One training epoch is one reader epoch, every example of every shard once (DALI returns all of an
  epoch's examples before the next epoch's). Training shuffles within a buffer of SHUFFLE_BUFFER
  examples (seeded by seed, rank and start epoch); `fn.decoders.image_random_crop` draws the crop and
  a coin flip mirrors. Eval reads in file order; the pads of a pass are the positions past the
  shard's size, and a per-batch mask input gives them label -1.
exact: sampling.py decides the epoch's global permutation, the shards, the padding and every crop
  window and flip (a batch at a time, in numpy); the examples reach DALI through
  `fn.external_source` (experimental.DALIDatasetWithInputs), each sample one uint8 vector of the 24
  meta bytes (int32 label, x, y, width, height, flip) and the JPEG. Gives exact resume and the same
  batches as the tf.data twin (tfdata.py).

Both decode, resize to image_size, mirror and normalize in DALI. Where it runs is decided by
`placement()`: on a GPU the decoder is "mixed" (nvJPEG, with the hardware decoder's share and
NVIDIA's preallocation hints) and everything after it runs on the GPU; on a CPU (device_id None)
everything runs on /cpu:0. Eval datasets are endless: passes back to back.
"""
import dataclasses

import numpy as np
import tensorflow as tf
import nvidia.dali.plugin.tf as dali_tf
import nvidia.dali.tfrecord as tfrec
from nvidia.dali import fn, pipeline_def, types
from tensorflow.python.data.ops import dataset_ops

from tf_rn50.data import records as records_lib, sampling

SHUFFLE_BUFFER = 1024        # examples the train reader shuffles among (DALI's initial_fill)
PREFETCH = 2                 # batches made ahead: DALI's queue; on the CPU also tf.data's
META_BYTES = 6 * 4
# nvJPEG buffers preallocated for the largest ImageNet image, as NVIDIA's MLPerf ResNet-50 pipelines do.
GPU_DECODER_HINTS = dict(preallocate_width_hint=5980, preallocate_height_hint=6430,
                         device_memory_padding=211025920, host_memory_padding=140544512)


@dataclasses.dataclass(frozen=True)
class Placement:
  """Everything that differs between a GPU rank and a CPU one."""
  device_id: int | None      # DALI's CUDA ordinal; None: no GPU, no CUDA
  tf_device: str             # where the DALIDataset (and its outputs) live
  decoder: str               # "mixed" (nvJPEG, output on the GPU) or "cpu"
  decoder_args: dict         # GPU-only decoder tuning
  dali_type: object          # crop_mirror_normalize's output type
  tf_type: tf.DType          # the dataset's image type
  tf_prefetch: int           # tf.data prefetch after the dataset; 0 on a GPU (see placement)


def placement(device_id, dtype, hw_decoder_load=0.65):
  """Where the pipeline runs for DALI device `device_id` (None: the CPU) and image dtype
  fp32/fp16/bf16. On a GPU, TF sees the rank's GPU as /gpu:0, and nothing of tf.data follows the
  dataset (DALI's docs: tf.data has no GPU kernels; a GPU DALIDataset is prefetched by DALI's own
  queue in device memory, PREFETCH batches deep). DALI has no bfloat16: on the CPU a tf.data cast
  follows; on a GPU there is none, so bf16 is refused there."""
  dali_type = types.FLOAT16 if dtype == "fp16" else types.FLOAT
  tf_type = {"fp32": tf.float32, "fp16": tf.float16, "bf16": tf.bfloat16}[dtype]
  if device_id is None:
    return Placement(None, "/cpu:0", "cpu", {}, dali_type, tf_type, PREFETCH)
  if dtype == "bf16":
    raise ValueError("--dtype=bf16: DALI has no bfloat16 output and a GPU DALIDataset takes no cast after it; "
                     "use --dtype=fp16 on GPUs")
  return Placement(device_id, "/gpu:0", "mixed", dict(hw_decoder_load=hw_decoder_load, **GPU_DECODER_HINTS),
                   dali_type, tf_type, 0)


def _read(records, *, rank, size, shuffle):
  """(JPEG bytes, 0-based int32 labels) of this rank's shard, from DALI's reader of records' files."""
  shards = dict(shard_id=rank, num_shards=size, stick_to_shard=True, pad_last_batch=True,
                random_shuffle=shuffle, initial_fill=SHUFFLE_BUFFER, name="Reader")
  if records.data_format == "recordio":
    jpegs, labels = fn.readers.mxnet(path=records.paths, index_path=records.index_paths, **shards)
    labels = labels[0]                                   # float32; im2rec may store a label vector
  else:
    features = fn.readers.tfrecord(path=records.paths, index_path=records.index_paths, features={
        "image/encoded": tfrec.FixedLenFeature((), tfrec.string, ""),
        "image/class/label": tfrec.FixedLenFeature([1], tfrec.int64, -1)}, **shards)
    jpegs, labels = features["image/encoded"], features["image/class/label"][0] - 1   # stored 1-based
  return jpegs, fn.cast(labels, dtype=types.INT32)


def feed(records, sampler, *, train, rank, size):
  """A path's input as DALI's decoder gets it, inside a pipeline: (JPEG bytes, labels, meta). meta is
  the exact sampler's int32 [label, x, y, width, height, flip]; None for DALI's readers (the decoder
  crops). Eval pads have label -1: the exact sampler marks them; for the reader, the "real" input
  (feed_inputs) is 0 at the positions of a pass past the shard's size."""
  if sampler == "exact":
    raw = fn.external_source(name="samples", dtype=types.UINT8, ndim=1, batch=False)
    meta = fn.reinterpret(fn.slice(raw, start=[0], shape=[META_BYTES], axes=[0]), dtype=types.INT32)
    jpeg = fn.slice(raw, start=[META_BYTES], end=[2**31 - 1], axes=[0], out_of_bounds_policy="trim_to_shape")
    return jpeg, meta[0], meta
  jpegs, labels = _read(records, rank=rank, size=size, shuffle=train)
  if not train:
    real = fn.external_source(name="real", dtype=types.INT32, ndim=0, batch=True)
    labels = labels * real + real - 1
  return jpegs, labels, None


def _exact_samples(batches):
  """The exact sampler's batches as DALI's per-sample input: each sample's meta and JPEG joined in
  Python a batch at a time (one generator call per batch), split into samples by tf.data."""
  def packed():
    for jpegs, metas in batches():
      yield [meta.tobytes() + jpeg for meta, jpeg in zip(metas, jpegs)]
  samples = tf.data.Dataset.from_generator(packed, output_signature=tf.TensorSpec([None], tf.string))
  return samples.unbatch().map(lambda sample: tf.io.decode_raw(sample, tf.uint8))


def feed_inputs(records, sampler, *, train, rank, size, batch_size, image_size, seed=0, start_epoch=0):
  """{external source name: (tf.data.Dataset on the CPU, batch mode)} that feed() needs."""
  with tf.device("/cpu:0"):
    if sampler == "exact":
      if train:
        batches = lambda: sampling.train_batches(records, rank, size, seed, start_epoch, batch_size)
      else:
        batches = lambda: sampling.eval_batches(records, rank, size, batch_size, image_size)
      return {"samples": (_exact_samples(batches), False)}
    if train:
      return {}
    _, real = sampling.eval_order(len(records), rank, size, batch_size)
    return {"real": (tf.data.Dataset.from_tensor_slices(real.reshape(-1, batch_size).astype(np.int32)).repeat(), True)}


def _decode_args(place):
  # TF's decoder ignores EXIF orientation; so do these, for the same pixels on every path.
  return dict(device=place.decoder, output_type=types.RGB, adjust_orientation=False, **place.decoder_args)


def _graph(records, place, *, sampler, train, image_size, rank, size):
  """The whole pipeline: feed, decode (and crop), resize to image_size, mirror, normalize."""
  jpegs, labels, meta = feed(records, sampler, train=train, rank=rank, size=size)
  square = dict(size=[image_size, image_size], interp_type=types.INTERP_LINEAR, antialias=True)
  if meta is not None:
    images = fn.decoders.image_slice(jpegs, meta[1:3], meta[3:5], axis_names="WH", **_decode_args(place))
    images, normalize = fn.resize(images, **square), dict(mirror=meta[5])
  elif train:
    images = fn.decoders.image_random_crop(jpegs, random_area=list(sampling.AREA),
                                           random_aspect_ratio=list(sampling.ASPECT),
                                           num_attempts=sampling.CROP_ATTEMPTS, **_decode_args(place))
    images, normalize = fn.resize(images, **square), dict(mirror=fn.random.coin_flip(probability=0.5))
  else:
    images = fn.resize(fn.decoders.image(jpegs, **_decode_args(place)), interp_type=types.INTERP_LINEAR,
                       antialias=True, resize_shorter=round(image_size * sampling.EVAL_RESIZE))
    normalize = dict(crop=(image_size, image_size))
  images = fn.crop_mirror_normalize(images, mean=list(sampling.MEAN), std=list(sampling.STD),
                                    dtype=place.dali_type, output_layout="HWC", **normalize)
  return images, labels if place.device_id is None else labels.gpu()


def pipeline(graph, device_id, *, batch_size, threads, seed=None, **graph_args):
  """The DALI pipeline of graph(**graph_args) on DALI device `device_id`."""
  return pipeline_def(graph, batch_size=batch_size, num_threads=threads, device_id=device_id, seed=seed,
                      prefetch_queue_depth=PREFETCH)(**graph_args)


def dali_dataset(pipe, place, inputs, **args):
  """The DALIDataset of a pipeline on place's device, its inputs (feed_inputs) moved there."""
  with tf.device(place.tf_device):
    if not inputs:
      return dali_tf.DALIDataset(pipeline=pipe, device_id=place.device_id, **args)
    if place.device_id is not None:
      inputs = {name: (d.apply(tf.data.experimental.copy_to_device(place.tf_device)), batch)
                for name, (d, batch) in inputs.items()}
    return dali_tf.experimental.DALIDatasetWithInputs(pipeline=pipe, device_id=place.device_id, input_datasets={
        name: dali_tf.experimental.Input(d, batch=batch) for name, (d, batch) in inputs.items()}, **args)


class _Explained(dataset_ops.UnaryUnchangedStructureDataset):
  """`dataset` unchanged, but a failure while iterating it in Python is raised as a DataError with
  DALI's message, the files read and where to find the bad record (DALI's message has no file)."""

  def __init__(self, dataset, records):
    self._explanation = (f"while reading {records.files()}: a corrupt record or JPEG? "
                         f"scripts/verify_dataset.py {records.data_dir} checks every record and lists the bad ones")
    super().__init__(dataset, dataset._variant_tensor)

  def __iter__(self):
    # The iterator is made here, not at the first next(): the pipeline starts when the engine asks.
    try:
      return self._explained(super().__iter__())
    except tf.errors.OpError as e:
      raise self._error(e) from None

  def _explained(self, batches):
    while True:
      try:
        batch = next(batches)
      except StopIteration:
        return
      except tf.errors.OpError as e:
        raise self._error(e) from None
      yield batch

  def _error(self, e):
    return records_lib.DataError(f"{e.message}\n{self._explanation}")


def _reader_seed(seed, rank, start_epoch):
  """DALI's seed (shuffle, crops, flips): distinct per rank, and a resumed run does not replay epoch 0."""
  return int(np.random.SeedSequence([seed, rank, start_epoch]).generate_state(1)[0] >> 1)


def _dataset(records, *, sampler, train, batch_size, image_size, dtype, rank, size, threads, device_id,
             hw_decoder_load, seed=0, start_epoch=0):
  place = placement(device_id, dtype, hw_decoder_load)
  pipe = pipeline(_graph, place.device_id, batch_size=batch_size, threads=threads,
                  seed=_reader_seed(seed, rank, start_epoch),
                  records=records, place=place, sampler=sampler, train=train, image_size=image_size, rank=rank,
                  size=size)
  inputs = feed_inputs(records, sampler, train=train, rank=rank, size=size, batch_size=batch_size,
                       image_size=image_size, seed=seed, start_epoch=start_epoch)
  dataset = dali_dataset(pipe, place, inputs, batch_size=batch_size,
                         output_shapes=((batch_size, image_size, image_size, 3), (batch_size,)),
                         output_dtypes=(tf.float16 if place.dali_type == types.FLOAT16 else tf.float32, tf.int32))
  if place.tf_type == tf.bfloat16:
    dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.bfloat16), labels))
  return _Explained(dataset.prefetch(place.tf_prefetch) if place.tf_prefetch else dataset, records)


def train_dataset(records, **args):
  """Endless training batches of this rank (see the module's docstring for the samplers)."""
  return _dataset(records, train=True, **args)


def eval_dataset(records, **args):
  """Endless eval passes of this rank, back to back; pads have label -1."""
  return _dataset(records, train=False, **args)
