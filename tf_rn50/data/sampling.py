"""Which examples each rank reads, in which order, and how each one is cropped and flipped.

Both real backends (DALI and tf.data) are fed from these streams, so they agree on order and
augmentation, and both resume exactly. Everything random here is drawn from numpy generators keyed
by (seed, epoch, rank), so a rank's batches of epoch e depend only on (seed, e, rank, ranks, N,
batch) and never on what ran before.

A stream yields whole batches, ([jpeg bytes], metas) with a meta = int32 [label, x, y, width,
height, flip]: the crop window in source pixels and whether to mirror it, computed for the batch at
once from the image sizes that scripts/build_dataset.py stored (records.py). Each backend decodes
only that window (ROI decode), resizes it to image_size x image_size, mirrors, normalizes.
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


def random_crops(heights, widths, u):
  """Random-resized-crop windows [n, (x, y, w, h)] for images of heights, widths [n] from uniforms
  u [n, CROP_ATTEMPTS, 4]: the first attempt that fits; else the largest centered window whose
  aspect is in range."""
  heights, widths = heights[:, None], widths[:, None]
  target = heights * widths * (AREA[0] + u[..., 0] * (AREA[1] - AREA[0]))
  ratio = np.exp(np.log(ASPECT[0]) + u[..., 1] * (np.log(ASPECT[1]) - np.log(ASPECT[0])))
  w, h = np.round(np.sqrt(target * ratio)), np.round(np.sqrt(target / ratio))
  fits = (w > 0) & (w <= widths) & (h > 0) & (h <= heights)
  attempt = np.argmax(fits, axis=1)[:, None]                  # the first that fits (0 if none)
  w, h = np.take_along_axis(w, attempt, 1), np.take_along_axis(h, attempt, 1)
  x = (np.take_along_axis(u[..., 2], attempt, 1) * (widths - w + 1)).astype(np.int64)
  y = (np.take_along_axis(u[..., 3], attempt, 1) * (heights - h + 1)).astype(np.int64)
  # Fallback: the whole image, trimmed to the nearest aspect in range.
  fw = np.where(widths > heights * ASPECT[1], np.round(heights * ASPECT[1]), widths)
  fh = np.where(widths < heights * ASPECT[0], np.round(widths / ASPECT[0]), heights)
  windows = np.concatenate([x, y, w, h], axis=1).astype(np.int64)
  fallback = np.concatenate([(widths - fw) // 2, (heights - fh) // 2, fw, fh], axis=1).astype(np.int64)
  return np.where(fits.any(axis=1)[:, None], windows, fallback)


def center_crops(heights, widths, image_size):
  """The eval windows [n, (x, y, w, h)]: the central square that becomes image_size after resizing
  the shorter side to round(image_size * 256/224)."""
  side = np.maximum(1, np.round(np.minimum(heights, widths) * image_size / round(image_size * EVAL_RESIZE)))
  return np.stack([(widths - side) // 2, (heights - side) // 2, side, side], axis=1).astype(np.int64)


def _metas(labels, windows, flips):
  """int32 [n, 6] metas: label, window, flip."""
  return np.column_stack([labels, windows, flips]).astype(np.int32)


def train_batches(records, rank, size, seed, start_epoch, batch):
  """Endless batches ([jpeg bytes], metas [batch, 6]) for this rank from epoch start_epoch on."""
  n = len(records)
  epoch = start_epoch
  while True:
    rng = np.random.default_rng([seed, epoch, rank, 1])
    order = train_order(n, rank, size, seed, epoch, batch)
    uniforms = rng.random((len(order), CROP_ATTEMPTS, 4))
    flips = rng.integers(0, 2, len(order))
    for start in range(0, len(order), batch):
      part = slice(start, start + batch)
      jpegs, labels, shapes = records.read_batch(order[part])
      yield jpegs, _metas(labels, random_crops(shapes[:, 0], shapes[:, 1], uniforms[part]), flips[part])
    epoch += 1


def eval_batches(records, rank, size, batch, image_size):
  """Endless eval passes of batches ([jpeg bytes], metas [batch, 6]) for this rank, back to back;
  padding examples have label -1."""
  order, real = eval_order(len(records), rank, size, batch)
  while True:
    for start in range(0, len(order), batch):
      part = slice(start, start + batch)
      jpegs, labels, shapes = records.read_batch(order[part])
      labels = np.where(real[part], labels, -1)
      no_flip = np.zeros(len(labels), np.int64)
      yield jpegs, _metas(labels, center_crops(shapes[:, 0], shapes[:, 1], image_size), no_flip)
