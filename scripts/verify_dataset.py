#!/usr/bin/env python3
"""Checks a dataset built for tf_rn50 and lists every problem; exits 1 if there is any.

  scripts/verify_dataset.py DIR [--format recordio|tfrecord] [--num_classes N]

For each split: the index files against the data files, every record's layout, every label in
range, every image fully decodable (Pillow) and of the size stored beside it (.sizes), TFRecord
checksums, and the examples per class (a class without training examples is a problem). The format
is guessed from the files if not given; the class count comes from DIR/classes.txt (written by
build_dataset.py) or --num_classes.
"""
import in_venv  # noqa: F401  (first: reruns this tool under the clone's .venv python)

import argparse
import collections
import io
import multiprocessing
import os
import sys
import time

from PIL import Image

from build_dataset import progress
from tf_rn50.data import records

CHUNK = 256
_records = None                          # each worker's reader of the split


def open_split(data_dir, data_format, split, num_classes):
  global _records
  _records = records.Records(data_dir, data_format, split, num_classes)


def check_chunk(bounds):
  """(problems, label counts) of examples [start, stop) of the worker's split."""
  problems, counts = [], collections.Counter()
  for i in range(*bounds):
    try:
      jpeg, label, shape = _records.read(i)
      with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
      if (image.height, image.width) != shape:
        problems.append(f"{_records.where(i)}: the stored size {shape[0]}x{shape[1]} (height x width) is not the "
                        f"JPEG's {image.height}x{image.width} (a stale .sizes file? delete it)")
        continue
      counts[label] += 1
    except records.DataError as e:
      problems.append(str(e))
    except (OSError, ValueError, SyntaxError) as e:
      problems.append(f"{_records.where(i)}: image does not decode: {e}")
  return problems, counts


def check_checksums(paths):
  """TFRecord CRCs, as TensorFlow's reader checks them."""
  import tensorflow as tf
  problems = []
  for path in paths:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.DataLossError as e:
      problems.append(f"{path}: {e.message.splitlines()[0]}")
  return problems


def check_split(data_dir, data_format, split, num_classes, workers):
  """(problems, label counts) of one split."""
  try:
    n = len(records.Records(data_dir, data_format, split))
  except records.DataError as e:
    return [str(e)], collections.Counter()
  chunks = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
  problems, counts, done, start = [], collections.Counter(), 0, time.time()
  with multiprocessing.get_context("spawn").Pool(
      workers, open_split, (data_dir, data_format, split, num_classes)) as pool:
    for chunk_problems, chunk_counts in pool.imap(check_chunk, chunks):
      problems += chunk_problems
      counts += chunk_counts
      done += sum(chunk_counts.values()) + len(chunk_problems)
      progress(done, n, f"{data_format} {split}", start)
  if data_format == "tfrecord":
    problems += check_checksums(records.split_files(data_dir, data_format, split))
  return problems, counts


def guess_format(data_dir):
  for data_format in ("recordio", "tfrecord"):
    try:
      records.split_files(data_dir, data_format, "train")
      return data_format
    except records.DataError:
      pass
  raise SystemExit(f"{data_dir}: neither train.rec nor train-NNNNN-of-NNNNN TFRecord shards")


def class_count(data_dir, num_classes):
  if num_classes:
    return num_classes
  path = os.path.join(data_dir, "classes.txt")
  if not os.path.exists(path):
    raise SystemExit(f"{path}: missing; pass --num_classes")
  with open(path) as f:
    return sum(1 for line in f if line.strip())   # lines are `wnid` or `wnid<TAB>name`


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("data_dir")
  parser.add_argument("--format", choices=["recordio", "tfrecord"], help="Default: guessed.")
  parser.add_argument("--num_classes", type=int, help="Default: the lines of DIR/classes.txt.")
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  args = parser.parse_args()
  data_format = args.format or guess_format(args.data_dir)
  num_classes = class_count(args.data_dir, args.num_classes)
  all_problems = []
  for split in ("train", "val"):
    problems, counts = check_split(args.data_dir, data_format, split, num_classes, args.workers)
    total = sum(counts.values())
    per_class = [counts[c] for c in range(num_classes)]
    print(f"{split}: {total} good examples, {sum(1 for c in per_class if c)} of {num_classes} "
          f"classes, {min(per_class)}-{max(per_class)} per class, {len(problems)} problems")
    if split == "train" and total:
      problems += [f"{args.data_dir}: class {c} has no training examples"
                   for c, count in enumerate(per_class) if count == 0]
    all_problems += problems
  for problem in all_problems:
    print(problem)
  if all_problems:
    sys.exit(f"{len(all_problems)} problems in {args.data_dir}")
  print(f"{args.data_dir}: OK ({data_format})")


if __name__ == "__main__":
  main()
