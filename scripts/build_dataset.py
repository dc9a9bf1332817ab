#!/usr/bin/env python3
"""Packs ImageNet (ILSVRC2012, as downloaded and unpacked) into the dataset layouts tf_rn50 reads.

  scripts/build_dataset.py --src DIR --out DIR --format recordio|tfrecord \
      [--val_labels LOC_val_solution.csv] [--synset_words synset_words.txt]

The source has train/<wnid>/*.JPEG and a validation set that is either flat, val/*.JPEG with
--val_labels (Kaggle's LOC_val_solution.csv, or a plain list of "<file> <wnid>" lines), or sorted
into val/<wnid>/*. The classes are the sorted folder names under train/ (the standard order) and a
class's label is its position. OUT/classes.txt lists them in label order, one per line, with the
human name after a tab when --synset_words (lines "n01440764 tench, Tinca tinca") is given.

recordio writes train.rec/.idx and val.rec/.idx (MXNet im2rec layout); tfrecord writes
train-NNNNN-of-NNNNN and validation-NNNNN-of-NNNNN shards with DALI index files; both write the
image sizes beside them (see tf_rn50/data/records.py). Examples are stored in a fixed shuffled order
(--seed), as im2rec does. Every core reads and checks images (--workers); a progress bar shows the
rate and the time left.

JPEG bytes are kept as they are. Files that are not RGB or grayscale JPEGs (ImageNet's train set
has one PNG and 22 CMYK JPEGs, all named .JPEG) are converted to RGB JPEG (quality 95), as the MLPerf
rules allow, each with a log line; a file that does not decode stops the build: all such files are
listed and the split's outputs are removed.
"""
import in_venv  # noqa: F401  (first: reruns this tool under the clone's .venv python)

import argparse
import csv
import io
import multiprocessing
import os
import random
import sys
import time

from PIL import Image

from tf_rn50.data import records


def progress(done, total, what, start):
  """One self-overwriting status line on stderr, with the time left at the current rate."""
  width = 30
  filled = width * done // max(total, 1)
  rate = done / max(time.time() - start, 1e-9)
  left = round((total - done) / max(rate, 1e-9))
  end = "\n" if done == total else ""
  print(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:.0f}/s "
        f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", end=end, file=sys.stderr, flush=True)


def list_classes(src):
  train = os.path.join(src, "train")
  if not os.path.isdir(train):
    raise SystemExit(f"{src}: no train/ folder")
  classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
  if not classes:
    raise SystemExit(f"{train}: no class folders")
  return classes


def list_images(src, split, classes):
  """[(path, label)] of split/<wnid>/*, in a fixed order."""
  folder = os.path.join(src, split)
  unknown = sorted(set(os.listdir(folder)) - set(classes))
  if unknown:
    raise SystemExit(f"{folder}: classes not in train/: {unknown}")
  return [(os.path.join(folder, name, f), label) for label, name in enumerate(classes)
          if os.path.isdir(os.path.join(folder, name))
          for f in sorted(os.listdir(os.path.join(folder, name)))]


def read_val_labels(path):
  """{file name without extension: wnid} from Kaggle's LOC_val_solution.csv (ImageId,PredictionString
  whose first word is the wnid) or from "<file> <wnid>" lines."""
  with open(path) as f:
    text = f.read()
  if text.startswith("ImageId,"):
    rows = [(row["ImageId"], row["PredictionString"].split()[:1]) for row in csv.DictReader(io.StringIO(text))]
  else:
    rows = [(fields[0], fields[1:]) for fields in (line.split() for line in text.splitlines()) if fields]
  bad = [name for name, wnid in rows if len(wnid) != 1]
  if bad:
    raise SystemExit(f"{path}: no wnid for {len(bad)} files, e.g. {bad[:3]}")
  return {os.path.splitext(name)[0]: wnid[0] for name, wnid in rows}


def list_flat_val(src, classes, labels_path):
  """[(path, label)] of a flat val/ folder labelled by --val_labels, in file name order."""
  folder = os.path.join(src, "val")
  labels = read_val_labels(labels_path)
  files = sorted(os.listdir(folder))
  stems = [os.path.splitext(f)[0] for f in files]
  unlabelled = [f for f, stem in zip(files, stems) if stem not in labels]
  missing = sorted(set(labels) - set(stems))
  unknown = sorted({labels[stem] for stem in stems if stem in labels} - set(classes))
  problems = []
  if unlabelled:
    problems.append(f"{len(unlabelled)} files in {folder} have no label in {labels_path}, e.g. {unlabelled[:3]}")
  if missing:
    problems.append(f"{len(missing)} files labelled in {labels_path} are not in {folder}, e.g. {missing[:3]}")
  if unknown:
    problems.append(f"{labels_path}: classes not in train/: {unknown}")
  if problems:
    raise SystemExit("\n".join(problems))
  label = {wnid: i for i, wnid in enumerate(classes)}
  return [(os.path.join(folder, f), label[labels[stem]]) for f, stem in zip(files, stems)]


def list_split(src, split, classes, val_labels):
  """[(path, label)] of one split in either layout (see the module's docstring)."""
  folder = os.path.join(src, split)
  if split == "val" and any(os.path.isfile(os.path.join(folder, f)) for f in os.listdir(folder)):
    if not val_labels:
      raise SystemExit(f"{folder} holds the images themselves: pass --val_labels (LOC_val_solution.csv or "
                       "\"<file> <wnid>\" lines)")
    return list_flat_val(src, classes, val_labels)
  if split == "val" and val_labels:
    raise SystemExit(f"--val_labels given, but {folder} is sorted into class folders")
  return list_images(src, split, classes)


def class_lines(classes, synset_words):
  """classes.txt's lines: "wnid", or "wnid<TAB>human name" from a synset_words.txt file."""
  if not synset_words:
    return [f"{wnid}\n" for wnid in classes]
  with open(synset_words) as f:
    names = dict(line.rstrip("\n").split(maxsplit=1) for line in f if line.strip())
  unnamed = [wnid for wnid in classes if wnid not in names]
  if unnamed:
    raise SystemExit(f"{synset_words}: no name for {len(unnamed)} classes, e.g. {unnamed[:3]}")
  return [f"{wnid}\t{names[wnid]}\n" for wnid in classes]


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
      return out.getvalue(), (f"{path}: a {image.format} image in {image.mode}, not an RGB or grayscale JPEG: "
                              "stored converted to an RGB JPEG (quality 95)")
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
          path = os.path.join(out, f"{name}.rec")
          writer = records.RecordioWriter(os.path.join(out, name))
        else:
          path = os.path.join(out, f"{name}-{bounds.index(i):05d}-of-{num_shards:05d}")
          writer = records.TfrecordWriter(path)
        written += [path, records.index_path(path), records.sizes_path(path)]
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
      if os.path.exists(path):
        os.remove(path)
  return errors


def build(src, out, data_format, images_per_shard=1024, workers=None, seed=0, val_labels=None, synset_words=None):
  """Builds both splits; exits with the list of bad source files if there are any."""
  classes = list_classes(src)
  lines = class_lines(classes, synset_words)
  splits = {split: list_split(src, split, classes, val_labels) for split in ("train", "val")}
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "classes.txt"), "w") as f:
    f.write("".join(lines))
  errors = []
  for split, items in splits.items():
    if not items:
      raise SystemExit(f"{os.path.join(src, split)}: no images")
    random.Random(seed).shuffle(items)
    errors += build_split(items, out, data_format, split, images_per_shard, workers or os.cpu_count())
  if errors:
    raise SystemExit(f"{len(errors)} bad source files (their splits were not written):\n" + "\n".join(errors))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="ILSVRC2012 tree: train/<wnid>/*.JPEG, and val/*.JPEG "
                      "(with --val_labels) or val/<wnid>/*.")
  parser.add_argument("--out", required=True, help="Output folder.")
  parser.add_argument("--format", required=True, choices=["recordio", "tfrecord"])
  parser.add_argument("--images_per_shard", type=int, default=1024, help="TFRecord shard size.")
  parser.add_argument("--workers", type=int, default=os.cpu_count(), help="Parallel readers.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the stored example order.")
  parser.add_argument("--val_labels", help="Labels of a flat val/: Kaggle's LOC_val_solution.csv or "
                      "\"<file> <wnid>\" lines.")
  parser.add_argument("--synset_words", help="synset_words.txt (\"n01440764 tench, Tinca tinca\" lines): "
                      "human class names for classes.txt.")
  args = parser.parse_args()
  build(args.src, args.out, args.format, args.images_per_shard, args.workers, args.seed, args.val_labels,
        args.synset_words)


if __name__ == "__main__":
  main()
