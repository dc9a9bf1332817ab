"""The on-disk dataset layouts, shared by the input pipelines and the dataset tools.

recordio: `train.rec`/`train.idx` and `val.rec`/`val.idx` in MXNet's im2rec layout. Each record is
  uint32 magic 0xced7230a, uint32 (cflag << 29 | length), then `length` bytes: the IRHeader
  (uint32 flag, float32 label, uint64 id, uint64 id2), `flag` more float32 labels when flag > 0,
  and the JPEG bytes; records are padded to 4 bytes. The .idx has one "key<TAB>offset" line per
  record. Labels are 0-based (float32, as im2rec writes them).
tfrecord: shards `train-00000-of-01024`, `validation-00000-of-00128`, ... of tf.train.Example with
  `image/encoded` (JPEG bytes) and `image/class/label` (int64, 1-based: 1..num_classes, as in the
  standard ImageNet TFRecords, where 0 was "background"; other features are ignored); each shard has
  a DALI index `<shard>.idx` with one "offset size" line per record (the format of DALI's
  tfrecord2idx). A shard without one gets it written on first use, next to the shard or, when that
  folder is read-only, under INDEX_CACHE. Reading subtracts 1 from the label.

Each data file may also have a sizes sidecar (`train.sizes`, `<shard>.sizes`; the writers below make
it): one "height width" line per record, in index order, so that the exact sampler needs no JPEG
header while training. Without it the headers are parsed as the records are read.

`Records` gives random access to one split by example number (index line order). Everything it
reads is checked; bad input raises `DataError` naming the file and the record.
"""
import functools
import glob
import os
import struct
import sys

from google.protobuf.message import DecodeError
import numpy as np

RECORDIO_MAGIC = 0xced7230a
IRHEADER = struct.Struct("<IfQQ")          # flag, label, id, id2
SPLITS = {"recordio": {"train": "train", "val": "val"},
          "tfrecord": {"train": "train", "val": "validation"}}
INDEX_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tf_rn50", "dali_index")


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


def _sidecar(path, extension):
  return (path[:-len(".rec")] if path.endswith(".rec") else path) + extension


def index_path(path):
  """The index file of a data file: train.rec -> train.idx; a TFRecord shard -> <shard>.idx."""
  return _sidecar(path, ".idx")


def sizes_path(path):
  """The sizes sidecar of a data file: train.rec -> train.sizes; a TFRecord shard -> <shard>.sizes."""
  return _sidecar(path, ".sizes")


def _cached_index_path(path):
  return os.path.join(INDEX_CACHE, os.path.abspath(path).strip(os.sep).replace(os.sep, "%") + ".idx")


def _write_atomically(path, text):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  temporary = f"{path}.{os.getpid()}.tmp"        # ranks may write the same file at once
  with open(temporary, "w") as f:
    f.write(text)
  os.replace(temporary, path)


def write_tfrecord_index(path):
  """Writes the DALI index of a TFRecord file (tfrecord2idx's "offset size" lines) and returns its
  path: next to the file, or under INDEX_CACHE when that folder is read-only."""
  rows, offset, file_size = [], 0, os.path.getsize(path)
  with open(path, "rb") as f:
    while offset < file_size:
      f.seek(offset)
      header = f.read(8)                   # uint64 length; then its CRC, the data, the data's CRC
      size = 16 + struct.unpack("<Q", header)[0] if len(header) == 8 else file_size + 1
      if offset + size > file_size:
        raise DataError(f"{path}: truncated TFRecord file: the record at byte {offset} runs past the end")
      rows.append(f"{offset} {size}\n")
      offset += size
  if not rows:
    raise DataError(f"{path}: empty TFRecord file")
  for idx in (index_path(path), _cached_index_path(path)):
    try:
      _write_atomically(idx, "".join(rows))
      break
    except OSError as e:
      error = e
  else:
    raise DataError(f"{path}: no DALI index and none can be written ({error})")
  print(f"{path}: no DALI index; wrote {idx} ({len(rows)} records, tfrecord2idx format)", file=sys.stderr,
        flush=True)
  return idx


def find_index(path, data_format):
  """The index file of a data file; a TFRecord shard without one gets it written."""
  candidates = [index_path(path)] + ([_cached_index_path(path)] if data_format == "tfrecord" else [])
  for idx in candidates:
    if os.path.exists(idx):
      return idx
  if data_format == "tfrecord":
    return write_tfrecord_index(path)
  raise DataError(f"{candidates[0]}: missing index for {path} (scripts/build_dataset.py writes both)")


def _read_index(path, idx, data_format):
  """(offsets, sizes) of the records of one data file, from its index, checked against the file."""
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


def _read_sizes(path, count):
  """[count, 2] (height, width) from a data file's sizes sidecar, or None when it has none."""
  sizes = sizes_path(path)
  if not os.path.exists(sizes):
    return None
  values = np.fromfile(sizes, dtype=np.int64, sep=" ")
  if len(values) != 2 * count or np.any(values <= 0):
    raise DataError(f"{sizes}: stale sizes for {path}: {len(values)} numbers for {count} records "
                    "(delete it to read the JPEG headers instead)")
  return values.reshape(count, 2)


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
    self.data_dir = data_dir
    self.data_format = data_format
    self.num_classes = num_classes
    self.paths = split_files(data_dir, data_format, split)
    self.index_paths = [find_index(p, data_format) for p in self.paths]
    indexes = [_read_index(p, idx, data_format) for p, idx in zip(self.paths, self.index_paths)]
    self.file = np.concatenate([np.full(len(o), i, np.int32) for i, (o, _) in enumerate(indexes)])
    self.record = np.concatenate([np.arange(len(o)) for o, _ in indexes])
    self.offset = np.concatenate([o for o, _ in indexes])
    self.size = np.concatenate([s for _, s in indexes])
    sizes = [_read_sizes(p, len(o)) for p, (o, _) in zip(self.paths, indexes)]
    self.shapes = None if any(s is None for s in sizes) else np.concatenate(sizes)   # [n, (h, w)]
    self._fds = {}

  def __len__(self):
    return len(self.offset)

  def files(self):
    """The data files in a few words, for messages."""
    if len(self.paths) == 1:
      return self.paths[0]
    first, last = (os.path.basename(p) for p in (self.paths[0], self.paths[-1]))
    return f"the {len(self.paths)} files {first} ... {last} in {self.data_dir}"

  def where(self, i):
    return f"{self.paths[self.file[i]]}: record {self.record[i]} (offset {self.offset[i]})"

  def read(self, i):
    """The checked JPEG bytes, 0-based label and (height, width) of example i."""
    (jpeg,), (label,), (shape,) = self.read_batch([i])
    return jpeg, int(label), tuple(int(x) for x in shape)

  def read_batch(self, indices):
    """([JPEG bytes], labels [n], (height, width) [n, 2]) of examples `indices`. Every record's
    layout and label is checked; the sizes come from the sidecar when there is one (the JPEG is then
    only checked to start like one), else from each JPEG's header."""
    jpegs, labels = zip(*[self._record(i) for i in indices])
    if self.shapes is not None:
      return jpegs, np.array(labels), self.shapes[indices]
    return jpegs, np.array(labels), np.array([self._checked(i, jpeg_size, jpeg) for i, jpeg in zip(indices, jpegs)])

  def _record(self, i):
    path = self.paths[self.file[i]]
    if path not in self._fds:
      self._fds[path] = os.open(path, os.O_RDONLY)
    raw = os.pread(self._fds[path], int(self.size[i]), int(self.offset[i]))
    if len(raw) != self.size[i]:
      raise DataError(f"{self.where(i)}: file ends after {len(raw)} of the record's {self.size[i]} bytes "
                      "(stale index?)")
    return self._checked(i, self._parse, raw)

  def _checked(self, i, parse, data):
    """parse(data), with a ValueError turned into a DataError naming example i's file and record."""
    try:
      return parse(data)
    except ValueError as e:
      raise DataError(f"{self.where(i)}: {e}") from None

  def _parse(self, raw):
    jpeg, label = (self._parse_recordio if self.data_format == "recordio" else self._parse_tfrecord)(raw)
    if jpeg[:2] != b"\xff\xd8":
      raise ValueError("not a JPEG (no start-of-image marker)")
    if self.num_classes is not None and not 0 <= label < self.num_classes:
      stored = label if self.data_format == "recordio" else f"{label + 1} (1-based)"
      raise ValueError(f"label {stored} out of range for {self.num_classes} classes")
    return jpeg, label

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
    length = struct.unpack("<Q", raw[:8])[0]
    if 16 + length != len(raw):
      raise ValueError(f"TFRecord length {length} does not match the index size {len(raw)} (stale index?)")
    try:
      features = example_message().FromString(raw[12:12 + length]).features.feature
    except DecodeError as e:
      raise ValueError(f"not a tf.train.Example: {e}") from None
    if not (features["image/encoded"].bytes_list.value and features["image/class/label"].int64_list.value):
      raise ValueError("example lacks image/encoded or image/class/label")
    return features["image/encoded"].bytes_list.value[0], features["image/class/label"].int64_list.value[0] - 1

  def close(self):
    for fd in self._fds.values():
      os.close(fd)
    self._fds = {}


@functools.cache
def example_message():
  """tf.train.Example as a protobuf class of our own, declaring the fields read (the parser skips the others).
  TensorFlow's example_pb2 would import all of TensorFlow (~3 s and ~0.5 GB in each process: the tools' workers
  read records without it); the wire format is the same."""
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  field = descriptor_pb2.FieldDescriptorProto
  proto = descriptor_pb2.FileDescriptorProto(name="tf_rn50/example.proto", package="tf_rn50", syntax="proto3")

  def message(container, name, *fields):   # fields: (number, name, type, label, message type)
    declared = container.add(name=name)
    for number, field_name, kind, label, type_name in fields:
      declared.field.add(number=number, name=field_name, type=kind, label=label, type_name=type_name)
    return declared

  repeated, single = field.LABEL_REPEATED, field.LABEL_OPTIONAL
  message(proto.message_type, "BytesList", (1, "value", field.TYPE_BYTES, repeated, None))
  message(proto.message_type, "Int64List", (1, "value", field.TYPE_INT64, repeated, None))
  message(proto.message_type, "Feature", (1, "bytes_list", field.TYPE_MESSAGE, single, ".tf_rn50.BytesList"),
          (3, "int64_list", field.TYPE_MESSAGE, single, ".tf_rn50.Int64List"))
  features = message(proto.message_type, "Features",
                     (1, "feature", field.TYPE_MESSAGE, repeated, ".tf_rn50.Features.FeatureEntry"))
  entry = message(features.nested_type, "FeatureEntry", (1, "key", field.TYPE_STRING, single, None),
                  (2, "value", field.TYPE_MESSAGE, single, ".tf_rn50.Feature"))
  entry.options.map_entry = True
  message(proto.message_type, "Example", (1, "features", field.TYPE_MESSAGE, single, ".tf_rn50.Features"))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tf_rn50.Example"))


class _Sidecars:
  """The index and the sizes sidecar of one data file being written. The sizes file is kept only
  when every JPEG's header gave its size (the tests write broken JPEGs on purpose)."""

  def __init__(self, path):
    self.sizes_path = sizes_path(path)
    self.idx = open(index_path(path), "w")
    self.sizes = open(self.sizes_path, "w")
    self.sizes_known = True

  def add(self, index_line, jpeg):
    self.idx.write(index_line)
    try:
      self.sizes.write("%d %d\n" % jpeg_size(jpeg))
    except ValueError:
      self.sizes_known = False

  def close(self):
    self.idx.close()
    self.sizes.close()
    if not self.sizes_known:
      os.remove(self.sizes_path)


class RecordioWriter:
  """Writes `<name>.rec`, `<name>.idx` and `<name>.sizes` (0-based labels)."""

  def __init__(self, path_prefix):
    self.rec = open(path_prefix + ".rec", "wb")
    self.sidecars = _Sidecars(path_prefix + ".rec")
    self.count = 0

  def write(self, jpeg, label):
    payload = IRHEADER.pack(0, float(label), self.count, 0) + jpeg
    self.sidecars.add(f"{self.count}\t{self.rec.tell()}\n", jpeg)
    self.rec.write(struct.pack("<II", RECORDIO_MAGIC, len(payload)) + payload)
    self.rec.write(b"\0" * (-len(payload) % 4))
    self.count += 1

  def close(self):
    self.rec.close()
    self.sidecars.close()


class TfrecordWriter:
  """Writes one TFRecord shard, its DALI index and its sizes (labels stored 1-based)."""

  def __init__(self, path):
    import tensorflow as tf
    self.tf = tf
    self.writer = tf.io.TFRecordWriter(path)
    self.sidecars = _Sidecars(path)
    self.offset = 0

  def write(self, jpeg, label):
    feature = self.tf.train.Feature
    example = self.tf.train.Example(features=self.tf.train.Features(feature={
        "image/encoded": feature(bytes_list=self.tf.train.BytesList(value=[jpeg])),
        "image/class/label": feature(int64_list=self.tf.train.Int64List(value=[label + 1])),
    })).SerializeToString()
    self.writer.write(example)
    size = 16 + len(example)               # length, its CRC, the data, its CRC
    self.sidecars.add(f"{self.offset} {size}\n", jpeg)
    self.offset += size

  def close(self):
    self.writer.close()
    self.sidecars.close()
