"""The on-disk dataset layouts, shared by the input pipelines and the dataset tools.

recordio: `train.rec`/`train.idx` and `val.rec`/`val.idx` in MXNet's im2rec layout. Each record is
  uint32 magic 0xced7230a, uint32 (cflag << 29 | length), then `length` bytes: the IRHeader
  (uint32 flag, float32 label, uint64 id, uint64 id2), `flag` more float32 labels when flag > 0,
  and the JPEG bytes; records are padded to 4 bytes. The .idx has one "key<TAB>offset" line per
  record. Labels are 0-based.
tfrecord: shards `train-00000-of-00008`, `validation-00000-of-00002`, ... of tf.train.Example with
  `image/encoded` (JPEG bytes) and `image/class/label` (int64, 1-based: 1..num_classes, as in the
  standard ImageNet TFRecords, where 0 was "background"); each shard has a DALI index `<shard>.idx`
  with one "offset size" line per record (the format of DALI's tfrecord2idx). Reading subtracts 1.

`Records` gives random access to one split by example number (index line order). Everything it
reads is checked; bad input raises `DataError` naming the file and the record.
"""
import glob
import os
import struct

import numpy as np

RECORDIO_MAGIC = 0xced7230a
IRHEADER = struct.Struct("<IfQQ")          # flag, label, id, id2
SPLITS = {"recordio": {"train": "train", "val": "val"},
          "tfrecord": {"train": "train", "val": "validation"}}


class DataError(ValueError):
  """Bad dataset input; the message names the file and the record."""


def split_files(data_dir, data_format, split):
  """The data files of one split, in order."""
  name = SPLITS[data_format][split]
  if data_format == "recordio":
    path = os.path.join(data_dir, f"{name}.rec")
    if not os.path.exists(path):
      raise DataError(f"{path}: missing (expected MXNet RecordIO {name}.rec/{name}.idx in {data_dir})")
    return [path]
  paths = sorted(glob.glob(os.path.join(data_dir, f"{name}-[0-9]*-of-[0-9]*[0-9]")))
  if not paths:
    raise DataError(f"{data_dir}: no TFRecord shards {name}-NNNNN-of-NNNNN")
  return paths


def index_path(path):
  """The index file of a data file: train.rec -> train.idx; a TFRecord shard -> <shard>.idx."""
  return path[:-len(".rec")] + ".idx" if path.endswith(".rec") else path + ".idx"


def _read_index(path, data_format):
  """(offsets, sizes) of the records of one data file, from its index, checked against the file."""
  idx = index_path(path)
  if not os.path.exists(idx):
    raise DataError(f"{idx}: missing index for {path} (scripts/build_dataset.py writes both)")
  rows = []
  with open(idx) as f:
    for line_no, line in enumerate(f, 1):
      fields = line.split()
      if len(fields) != 2 or not all(x.isdigit() for x in fields):
        raise DataError(f"{idx}: line {line_no} is not two integers: {line.strip()!r}")
      rows.append([int(x) for x in fields])
  if not rows:
    raise DataError(f"{idx}: empty index (no records in {path})")
  rows = np.array(rows, np.int64)
  file_size = os.path.getsize(path)
  if data_format == "recordio":
    # "key offset": the record's extent runs to the next record (or to the end of the file).
    offsets = rows[:, 1]
    order = np.argsort(offsets)
    starts = offsets[order]
    if np.any(np.diff(starts) <= 0) or starts[-1] >= file_size:
      raise DataError(f"{idx}: stale index for {path} ({file_size} bytes): offsets repeat "
                      "or point past the end")
    ends = np.empty_like(offsets)
    ends[order] = np.append(starts[1:], file_size)
    return offsets, ends - offsets
  offsets, sizes = rows[:, 0], rows[:, 1]
  if offsets[0] != 0 or np.any(offsets[1:] != offsets[:-1] + sizes[:-1]) or offsets[-1] + sizes[-1] != file_size:
    raise DataError(f"{idx}: stale index for {path} ({file_size} bytes): its records do not "
                    "tile the file")
  return offsets, sizes


def jpeg_size(data):
  """(height, width) from a JPEG's frame header; raises ValueError if it is not a whole JPEG."""
  if data[:2] != b"\xff\xd8":
    raise ValueError("not a JPEG (no start-of-image marker)")
  pos = 2
  while pos + 4 <= len(data):
    if data[pos] != 0xff:
      raise ValueError(f"corrupt JPEG (no marker at byte {pos})")
    marker = data[pos + 1]
    if marker == 0xff:                    # fill byte
      pos += 1
      continue
    length = int.from_bytes(data[pos + 2:pos + 4], "big")
    if 0xc0 <= marker <= 0xcf and marker not in (0xc4, 0xc8, 0xcc):   # a start-of-frame
      if pos + 9 > len(data):
        break
      height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
      # No end-of-image marker after the frame header means the file was cut short.
      if data.rfind(b"\xff\xd9", pos) < 0:
        raise ValueError(f"truncated JPEG ({len(data)} bytes, no end-of-image marker)")
      if height == 0 or width == 0:
        raise ValueError(f"corrupt JPEG (frame size {width}x{height})")
      return height, width
    pos += 2 + length
  raise ValueError(f"truncated or corrupt JPEG ({len(data)} bytes, no frame header)")


class Records:
  """Random access to the examples of one split: read(i) -> (JPEG bytes, 0-based label, (h, w))."""

  def __init__(self, data_dir, data_format, split, num_classes=None):
    self.data_format = data_format
    self.num_classes = num_classes
    self.paths = split_files(data_dir, data_format, split)
    indexes = [_read_index(p, data_format) for p in self.paths]
    self.file = np.concatenate([np.full(len(o), i, np.int32) for i, (o, _) in enumerate(indexes)])
    self.record = np.concatenate([np.arange(len(o)) for o, _ in indexes])
    self.offset = np.concatenate([o for o, _ in indexes])
    self.size = np.concatenate([s for _, s in indexes])
    self._fds = {}

  def __len__(self):
    return len(self.offset)

  def where(self, i):
    return f"{self.paths[self.file[i]]}: record {self.record[i]} (offset {self.offset[i]})"

  def read(self, i):
    """The checked JPEG bytes, 0-based label and (height, width) of example i."""
    path = self.paths[self.file[i]]
    if path not in self._fds:
      self._fds[path] = os.open(path, os.O_RDONLY)
    raw = os.pread(self._fds[path], int(self.size[i]), int(self.offset[i]))
    try:
      if len(raw) != self.size[i]:
        raise ValueError(f"file ends after {len(raw)} of the record's {self.size[i]} bytes (stale index?)")
      jpeg, label = (self._parse_recordio if self.data_format == "recordio" else self._parse_tfrecord)(raw)
      shape = jpeg_size(jpeg)
      if self.num_classes is not None and not 0 <= label < self.num_classes:
        stored = label if self.data_format == "recordio" else f"{label + 1} (1-based)"
        raise ValueError(f"label {stored} out of range for {self.num_classes} classes")
    except ValueError as e:
      raise DataError(f"{self.where(i)}: {e}") from None
    return jpeg, label, shape

  @staticmethod
  def _parse_recordio(raw):
    if len(raw) < 8 + IRHEADER.size:
      raise ValueError(f"{len(raw)} bytes is too short for a RecordIO record (stale index?)")
    magic, lrecord = struct.unpack("<II", raw[:8])
    length = lrecord & ((1 << 29) - 1)
    if magic != RECORDIO_MAGIC:
      raise ValueError(f"bad RecordIO magic {magic:#x} (stale index?)")
    if lrecord >> 29 != 0 or not 0 <= len(raw) - 8 - length < 4:
      raise ValueError(f"record length {length} does not match the index extent {len(raw)} (stale index?)")
    flag, label, _, _ = IRHEADER.unpack(raw[8:8 + IRHEADER.size])
    start = 8 + IRHEADER.size
    if flag > 0:                          # a label vector follows the header: take its first entry
      label = struct.unpack("<f", raw[start:start + 4])[0]
      start += 4 * flag
    if label != int(label):
      raise ValueError(f"label {label} is not an integer")
    return raw[start:8 + length], int(label)

  @staticmethod
  def _parse_tfrecord(raw):
    from tensorflow.core.example import example_pb2   # protobuf only; no TF runtime needed
    length = struct.unpack("<Q", raw[:8])[0]
    if 16 + length != len(raw):
      raise ValueError(f"TFRecord length {length} does not match the index size {len(raw)} (stale index?)")
    features = example_pb2.Example.FromString(raw[12:12 + length]).features.feature
    if not (features["image/encoded"].bytes_list.value and features["image/class/label"].int64_list.value):
      raise ValueError("example lacks image/encoded or image/class/label")
    return features["image/encoded"].bytes_list.value[0], features["image/class/label"].int64_list.value[0] - 1

  def close(self):
    for fd in self._fds.values():
      os.close(fd)
    self._fds = {}


class RecordioWriter:
  """Writes `<name>.rec` and `<name>.idx` (0-based labels)."""

  def __init__(self, path_prefix):
    self.rec = open(path_prefix + ".rec", "wb")
    self.idx = open(path_prefix + ".idx", "w")
    self.count = 0

  def write(self, jpeg, label):
    payload = IRHEADER.pack(0, float(label), self.count, 0) + jpeg
    self.idx.write(f"{self.count}\t{self.rec.tell()}\n")
    self.rec.write(struct.pack("<II", RECORDIO_MAGIC, len(payload)) + payload)
    self.rec.write(b"\0" * (-len(payload) % 4))
    self.count += 1

  def close(self):
    self.rec.close()
    self.idx.close()


class TfrecordWriter:
  """Writes one TFRecord shard and its DALI index (labels stored 1-based)."""

  def __init__(self, path):
    import tensorflow as tf
    self.tf = tf
    self.writer = tf.io.TFRecordWriter(path)
    self.idx = open(index_path(path), "w")
    self.offset = 0

  def write(self, jpeg, label):
    feature = self.tf.train.Feature
    example = self.tf.train.Example(features=self.tf.train.Features(feature={
        "image/encoded": feature(bytes_list=self.tf.train.BytesList(value=[jpeg])),
        "image/class/label": feature(int64_list=self.tf.train.Int64List(value=[label + 1])),
    })).SerializeToString()
    self.writer.write(example)
    size = 16 + len(example)               # length, its CRC, the data, its CRC
    self.idx.write(f"{self.offset} {size}\n")
    self.offset += size

  def close(self):
    self.writer.close()
    self.idx.close()
