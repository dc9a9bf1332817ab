"""Input pipelines: what the training engine calls. Backends: dali, tfdata, synthetic.

Every dataset yields (images, labels): images [batch, image_size, image_size, 3] NHWC, normalized
(sampling.MEAN/STD), float32/float16/bfloat16 for dtype fp32/fp16/bf16; labels int32 [batch], 0-based.
DALI datasets live on DALI's device (`device_id`: a CUDA ordinal, None for the CPU; the caller
decides) and are prefetched there; the engine adds no prefetch.

The sampler decides which examples a rank reads in which order (docs/input.md):
- "exact" (dali and tfdata backends): sampling.py. Epoch e (from start_epoch on) is a fresh
  permutation of all N examples drawn from (seed, e); rank r takes its contiguous slice (floor or ceil
  of N/size examples) and pads it to steps_per_epoch * batch_size by repeating the slice from its
  start. Crops and flips are drawn from (seed, e, rank), so starting at start_epoch=k gives exactly
  the batches an uninterrupted run gives from epoch k on, on either backend.
- "dali" (dali backend): DALI's readers. Rank r reads the same contiguous slice every epoch,
  shuffled within a buffer, padded by DALI to steps_per_epoch * batch_size; crops and flips are
  DALI's. An epoch is still every example once; a resumed run reshuffles (not the same batches).

train_dataset is endless: epoch after epoch, steps_per_epoch batches each.
eval_dataset is endless too: passes back to back, each pass ceil(ceil(N/size)/batch_size) batches
per rank that count every validation example exactly once over all ranks; padding has label -1.
"""
from tf_rn50.data import records, sampling

BACKENDS = ("dali", "tfdata", "synthetic")
SAMPLERS = ("exact", "dali")


def count_examples(data_dir, data_format, split):
  """Examples in split "train" or "val", from the index files alone."""
  return len(records.Records(data_dir, data_format, split))


def _open(data_dir, data_format, split, num_classes, num_examples):
  found = records.Records(data_dir, data_format, split, num_classes)
  if num_examples != len(found):
    raise records.DataError(f"{data_dir}: the {split} split has {len(found)} examples, "
                            f"not {num_examples} as the run was planned with")
  return found


def _backend(name, sampler, device_id, hw_decoder_load):
  """(module, its extra arguments) of backend `name` with `sampler`."""
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; one of {SAMPLERS}")
  if name == "dali":
    from tf_rn50.data import dali           # imports DALI only when asked for
    return dali, dict(sampler=sampler, device_id=device_id, hw_decoder_load=hw_decoder_load)
  if name == "tfdata":
    if sampler != "exact":
      raise ValueError(f"sampler {sampler!r} reads with DALI's readers: it needs the dali backend "
                       "(the tfdata backend is the exact sampler's tf.data twin)")
    from tf_rn50.data import tfdata
    return tfdata, {}
  raise ValueError(f"unknown data backend {name!r}; one of {BACKENDS}")


def train_dataset(backend, *, data_dir, data_format, batch_size, image_size, dtype, num_classes,
                  rank, size, seed, steps_per_epoch, num_examples, start_epoch=0, threads=4,
                  sampler="exact", device_id=None, hw_decoder_load=0.65):
  if steps_per_epoch != sampling.steps_per_epoch(num_examples, size, batch_size):
    raise ValueError(f"steps_per_epoch={steps_per_epoch} does not match {num_examples} examples "
                     f"on {size} ranks at batch {batch_size}")
  if backend == "synthetic":
    from tf_rn50.data import synthetic
    return synthetic.train_dataset(batch_size=batch_size, image_size=image_size, dtype=dtype,
                                   num_classes=num_classes, rank=rank, seed=seed)
  module, extra = _backend(backend, sampler, device_id, hw_decoder_load)
  found = _open(data_dir, data_format, "train", num_classes, num_examples)
  start, stop = sampling.shard(num_examples, rank, size)
  if start == stop:
    raise records.DataError(f"{data_dir}: empty shard: rank {rank} of {size} gets none of the "
                            f"{num_examples} training examples")
  return module.train_dataset(found, batch_size=batch_size, image_size=image_size, dtype=dtype, rank=rank,
                              size=size, seed=seed, start_epoch=start_epoch, threads=threads, **extra)


def eval_dataset(backend, *, data_dir, data_format, batch_size, image_size, dtype, num_classes,
                 rank, size, num_examples, threads=4, sampler="exact", device_id=None, hw_decoder_load=0.65):
  if backend == "synthetic":
    from tf_rn50.data import synthetic
    return synthetic.eval_dataset(batch_size=batch_size, image_size=image_size, dtype=dtype,
                                  num_classes=num_classes, rank=rank, size=size,
                                  num_examples=num_examples)
  module, extra = _backend(backend, sampler, device_id, hw_decoder_load)
  found = _open(data_dir, data_format, "val", num_classes, num_examples)
  if sampler == "dali" and num_examples < size:
    raise records.DataError(f"{data_dir}: {num_examples} validation examples cannot be sharded over {size} "
                            "ranks by DALI's reader (use --data_sampler=exact)")
  return module.eval_dataset(found, batch_size=batch_size, image_size=image_size, dtype=dtype, rank=rank,
                             size=size, threads=threads, **extra)
