"""Input pipelines: what the training engine calls. Backends: dali, tfdata, synthetic.

Every dataset yields (images, labels): images [batch, image_size, image_size, 3] NHWC, normalized
(sampling.MEAN/STD), float32/float16/bfloat16 for dtype fp32/fp16/bf16; labels int32 [batch], 0-based.

train_dataset is endless. Epoch e (from start_epoch on) is exactly steps_per_epoch batches per
rank: a fresh permutation of all N examples drawn from (seed, e); rank r takes its contiguous slice
(floor or ceil of N/size examples) and pads it to steps_per_epoch * batch_size by repeating the
slice from its start. Crops and flips are drawn from (seed, e, rank), so starting at start_epoch=k
gives exactly the batches an uninterrupted run gives from epoch k on.

eval_dataset is one pass: every validation example exactly once over all ranks, in full batches;
padding examples have label -1; every rank yields ceil(ceil(N/size)/batch_size) batches.
The dataset can be iterated again for the next evaluation.
"""
from tf_rn50.data import records, sampling

BACKENDS = ("dali", "tfdata", "synthetic")


def count_examples(data_dir, data_format, split):
  """Examples in split "train" or "val", from the index files alone."""
  return len(records.Records(data_dir, data_format, split))


def _open(data_dir, data_format, split, num_classes, num_examples):
  found = records.Records(data_dir, data_format, split, num_classes)
  if num_examples != len(found):
    raise records.DataError(f"{data_dir}: the {split} split has {len(found)} examples, "
                            f"not {num_examples} as the run was planned with")
  return found


def _backend(name):
  if name == "dali":
    from tf_rn50.data import dali           # imports DALI only when asked for
    return dali
  if name == "tfdata":
    from tf_rn50.data import tfdata
    return tfdata
  raise ValueError(f"unknown data backend {name!r}; one of {BACKENDS}")


def train_dataset(backend, *, data_dir, data_format, batch_size, image_size, dtype, num_classes,
                  rank, size, seed, steps_per_epoch, num_examples, start_epoch=0, threads=4):
  if steps_per_epoch != sampling.steps_per_epoch(num_examples, size, batch_size):
    raise ValueError(f"steps_per_epoch={steps_per_epoch} does not match {num_examples} examples "
                     f"on {size} ranks at batch {batch_size}")
  if backend == "synthetic":
    from tf_rn50.data import synthetic
    return synthetic.train_dataset(batch_size=batch_size, image_size=image_size, dtype=dtype,
                                   num_classes=num_classes, rank=rank, seed=seed)
  found = _open(data_dir, data_format, "train", num_classes, num_examples)
  start, stop = sampling.shard(num_examples, rank, size)
  if start == stop:
    raise records.DataError(f"{data_dir}: empty shard: rank {rank} of {size} gets none of the "
                            f"{num_examples} training examples")
  return _backend(backend).train_dataset(found, batch_size=batch_size, image_size=image_size,
                                         dtype=dtype, rank=rank, size=size, seed=seed,
                                         start_epoch=start_epoch, threads=threads)


def eval_dataset(backend, *, data_dir, data_format, batch_size, image_size, dtype, num_classes,
                 rank, size, num_examples, threads=4):
  if backend == "synthetic":
    from tf_rn50.data import synthetic
    return synthetic.eval_dataset(batch_size=batch_size, image_size=image_size, dtype=dtype,
                                  num_classes=num_classes, rank=rank, size=size,
                                  num_examples=num_examples)
  found = _open(data_dir, data_format, "val", num_classes, num_examples)
  return _backend(backend).eval_dataset(found, batch_size=batch_size, image_size=image_size,
                                        dtype=dtype, rank=rank, size=size, threads=threads)
