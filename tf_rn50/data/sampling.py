"""Which examples each rank reads, in which order, and how each one is cropped and flipped.

Both real backends (DALI and tf.data) are fed from these streams, so they agree on order and
augmentation, and both resume exactly. Everything random here is drawn from numpy generators keyed
by (seed, epoch, rank), so a rank's batches of epoch e depend only on (seed, e, rank, ranks, N,
batch) and never on what ran before.

A stream yields (jpeg bytes, meta) with meta = int32 [label, x, y, width, height, flip]: the crop
window in source pixels and whether to mirror it. Each backend decodes only that window (ROI
decode), resizes it to image_size x image_size, mirrors, normalizes.
"""
import math

import numpy as np

MEAN = (123.68, 116.78, 103.94)
STD = (58.395, 57.12, 57.375)
AREA = (0.05, 1.0)                      # random-resized-crop: fraction of the image area
ASPECT = (3 / 4, 4 / 3)                 # ... and width/height ratio (sampled log-uniform)
CROP_ATTEMPTS = 10
EVAL_RESIZE = 256 / 224                 # eval: shorter side to image_size * 256/224, center crop


def shard(n, rank, size):
  """The contiguous [start, stop) of n items that `rank` of `size` owns: ceil(n/size) or floor."""
  return rank * n // size, (rank + 1) * n // size


def steps_per_epoch(n, size, batch):
  """Full batches per rank and epoch (the same formula as flags.Plan.steps_per_epoch)."""
  return math.ceil(math.ceil(n / size) / batch)


def train_order(n, rank, size, seed, epoch, batch):
  """Example numbers this rank trains on in `epoch`: its slice of the epoch's permutation of all
  n examples, padded to whole batches by repeating the slice from its start."""
  start, stop = shard(n, rank, size)
  mine = np.random.default_rng([seed, epoch]).permutation(n)[start:stop]
  return np.resize(mine, steps_per_epoch(n, size, batch) * batch)


def eval_order(n, rank, size, batch):
  """(example numbers, is_real) for one eval pass: this rank's contiguous slice, padded with
  repeats (label -1) so every rank yields the same number of full batches."""
  start, stop = shard(n, rank, size)
  total = steps_per_epoch(n, size, batch) * batch
  mine = np.arange(start, stop) if stop > start else np.zeros(1, np.int64)   # empty: pad with #0
  return np.resize(mine, total), np.arange(total) < stop - start


def random_crop(height, width, u):
  """Random-resized-crop window (x, y, w, h) from uniforms u [CROP_ATTEMPTS, 4]; falls back to
  the largest centered window whose aspect is in range."""
  area = height * width
  for a, r, ux, uy in u:
    target = area * (AREA[0] + a * (AREA[1] - AREA[0]))
    ratio = math.exp(math.log(ASPECT[0]) + r * (math.log(ASPECT[1]) - math.log(ASPECT[0])))
    w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
    if 0 < w <= width and 0 < h <= height:
      return int(ux * (width - w + 1)), int(uy * (height - h + 1)), w, h
  w, h = width, height
  if width / height < ASPECT[0]:
    h = round(width / ASPECT[0])
  elif width / height > ASPECT[1]:
    w = round(height * ASPECT[1])
  return (width - w) // 2, (height - h) // 2, w, h


def center_crop(height, width, image_size):
  """The eval window: the central square that becomes image_size after resizing the shorter side
  to round(image_size * 256/224)."""
  side = min(height, width) * image_size / round(image_size * EVAL_RESIZE)
  side = max(1, round(side))
  return (width - side) // 2, (height - side) // 2, side, side


def train_stream(records, rank, size, seed, start_epoch, batch):
  """Endless (jpeg, meta) for this rank from epoch start_epoch on."""
  n = len(records)
  epoch = start_epoch
  while True:
    rng = np.random.default_rng([seed, epoch, rank, 1])
    order = train_order(n, rank, size, seed, epoch, batch)
    uniforms = rng.random((len(order), CROP_ATTEMPTS, 4))
    flips = rng.integers(0, 2, len(order))
    for i, u, flip in zip(order, uniforms, flips):
      jpeg, label, (height, width) = records.read(i)
      yield jpeg, np.array([label, *random_crop(height, width, u), flip], np.int32)
    epoch += 1


def eval_stream(records, rank, size, batch, image_size):
  """Endless eval passes of (jpeg, meta) for this rank, back to back; padding examples have label -1."""
  order, real = eval_order(len(records), rank, size, batch)
  while True:
    for i, is_real in zip(order, real):
      jpeg, label, (height, width) = records.read(i)
      label = label if is_real else -1
      yield jpeg, np.array([label, *center_crop(height, width, image_size), 0], np.int32)
