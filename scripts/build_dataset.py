#!/usr/bin/env python3
"""Packs an ImageNet-style image tree into the dataset layouts tf_rn50 reads.

  scripts/build_dataset.py --src DIR --out DIR --format recordio|tfrecord

The source has train/<class>/<image> and val/<class>/<image>; the classes are the sorted folder
names under train/ and a class's label is its position (written to OUT/classes.txt). recordio
writes train.rec/.idx and val.rec/.idx (MXNet im2rec layout); tfrecord writes
train-NNNNN-of-NNNNN and validation-NNNNN-of-NNNNN shards with DALI index files (see
tf_rn50/data/records.py). Examples are stored in a fixed shuffled order (--seed), as im2rec does.

JPEG bytes are kept as they are. Files that are not RGB or grayscale JPEGs (PNG, CMYK JPEG, ...)
are converted to RGB JPEG (quality 95), as the MLPerf rules allow; a file that does not decode stops
the build: all such files are listed and the split's outputs are removed.
"""
import in_venv  # noqa: F401  (first: reruns this tool under the clone's .venv python)

import argparse
import io
import multiprocessing
import os
import random
import sys
import time

from PIL import Image

from tf_rn50.data import records


def progress(done, total, what, start):
  """One self-overwriting status line on stderr."""
  width = 30
  filled = width * done // max(total, 1)
  rate = done / max(time.time() - start, 1e-9)
  end = "\n" if done == total else ""
  print(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:.0f}/s",
        end=end, file=sys.stderr, flush=True)


def list_classes(src):
  train = os.path.join(src, "train")
  if not os.path.isdir(train):
    raise SystemExit(f"{src}: no train/ folder")
  classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
  if not classes:
    raise SystemExit(f"{train}: no class folders")
  return classes


def list_images(src, split, classes):
  """[(path, label)] of one split, in a fixed order."""
  folder = os.path.join(src, split)
  unknown = sorted(set(os.listdir(folder)) - set(classes))
  if unknown:
    raise SystemExit(f"{folder}: classes not in train/: {unknown}")
  return [(os.path.join(folder, name, f), label) for label, name in enumerate(classes)
          if os.path.isdir(os.path.join(folder, name))
          for f in sorted(os.listdir(os.path.join(folder, name)))]


def prepare(path):
  """(jpeg bytes, None), (jpeg bytes, "converted ..."), or (None, error)."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()                       # a full decode: finds corrupt and truncated files
      if image.format == "JPEG" and image.mode in ("RGB", "L"):
        records.jpeg_size(data)          # what the input pipelines check
        return data, None
      out = io.BytesIO()
      image.convert("RGB").save(out, "JPEG", quality=95)
      return out.getvalue(), f"{path}: converted {image.format} {image.mode} to RGB JPEG"
  except (OSError, ValueError, SyntaxError) as e:
    return None, f"{path}: {e}"


def build_split(items, out, data_format, split, images_per_shard, workers):
  """Writes one split; returns the list of bad source files (then nothing is left written)."""
  name = records.SPLITS[data_format][split]
  num_shards = max(1, -(-len(items) // images_per_shard)) if data_format == "tfrecord" else 1
  bounds = [len(items) * k // num_shards for k in range(num_shards + 1)]
  written, errors, writer, start = [], [], None, time.time()
  # spawn, not fork: the parent may already run TensorFlow threads (TfrecordWriter).
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    results = pool.imap(prepare, [path for path, _ in items], chunksize=8)
    for i, ((jpeg, note), (_, label)) in enumerate(zip(results, items)):
      if i in bounds:                    # start the next file
        if writer:
          writer.close()
        if data_format == "recordio":
          writer = records.RecordioWriter(os.path.join(out, name))
          written += [os.path.join(out, name + ext) for ext in (".rec", ".idx")]
        else:
          shard = os.path.join(out, f"{name}-{bounds.index(i):05d}-of-{num_shards:05d}")
          writer = records.TfrecordWriter(shard)
          written += [shard, records.index_path(shard)]
      if jpeg is None:
        errors.append(note)
      else:
        if note:
          print(f"\n{note}", file=sys.stderr)
        writer.write(jpeg, label)
      if (i + 1) % 64 == 0 or i + 1 == len(items):
        progress(i + 1, len(items), f"{data_format} {split}", start)
  writer.close()
  if errors:
    for path in written:
      os.remove(path)
  return errors


def build(src, out, data_format, images_per_shard=1024, workers=None, seed=0):
  """Builds both splits; exits with the list of bad source files if there are any."""
  classes = list_classes(src)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "classes.txt"), "w") as f:
    f.write("".join(f"{c}\n" for c in classes))
  errors = []
  for split in ("train", "val"):
    items = list_images(src, split, classes)
    if not items:
      raise SystemExit(f"{os.path.join(src, split)}: no images")
    random.Random(seed).shuffle(items)
    errors += build_split(items, out, data_format, split, images_per_shard, workers or os.cpu_count())
  if errors:
    raise SystemExit(f"{len(errors)} bad source files (their splits were not written):\n" + "\n".join(errors))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="Image tree with train/<class>/* and val/<class>/*.")
  parser.add_argument("--out", required=True, help="Output folder.")
  parser.add_argument("--format", required=True, choices=["recordio", "tfrecord"])
  parser.add_argument("--images_per_shard", type=int, default=1024, help="TFRecord shard size.")
  parser.add_argument("--workers", type=int, default=os.cpu_count(), help="Parallel readers.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the stored example order.")
  args = parser.parse_args()
  build(args.src, args.out, args.format, args.images_per_shard, args.workers, args.seed)


if __name__ == "__main__":
  main()
