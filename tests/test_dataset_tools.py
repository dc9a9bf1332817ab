"""scripts/build_dataset.py, verify_dataset.py, make_demo_data.py, and the messages for bad input."""
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import skimage.data
import tensorflow as tf
from PIL import Image

from test_data import write_tree

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts")
sys.path.insert(0, SCRIPTS)
import build_dataset  # noqa: E402
import make_demo_data  # noqa: E402
import tf_rn50.data as data  # noqa: E402
from tf_rn50.data import records  # noqa: E402


def jpeg(height=40, width=56, **save_args):
  out = io.BytesIO()
  Image.fromarray(skimage.data.chelsea()[:height, :width]).save(out, "JPEG", **save_args)
  return out.getvalue()


def run_script(name, *args):
  # PYTHONPATH: this checkout's tf_rn50, not the one an editable install points to.
  return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *args], capture_output=True, text=True,
                        timeout=300, env={**os.environ, "PYTHONPATH": os.path.dirname(SCRIPTS)})


def write_ilsvrc(root, wnids, train_per_class, val_per_class):
  """A tiny ILSVRC2012 tree as downloaded: train/<wnid>/<wnid>_<n>.JPEG and a flat
  val/ILSVRC2012_val_<n>.JPEG; returns {val file: wnid}."""
  labels = {}
  for c, wnid in enumerate(wnids):
    os.makedirs(os.path.join(root, "train", wnid))
    for i in range(train_per_class):
      with open(os.path.join(root, "train", wnid, f"{wnid}_{i}.JPEG"), "wb") as f:
        f.write(jpeg(30 + 5 * c, 40 + i))
  os.makedirs(os.path.join(root, "val"))
  for n in range(val_per_class * len(wnids)):
    name = f"ILSVRC2012_val_{n + 1:08d}.JPEG"
    labels[name] = wnids[(n * 7) % len(wnids)]
    with open(os.path.join(root, "val", name), "wb") as f:
      f.write(jpeg(32, 33 + n))
  return labels


class BuildTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.get_temp_dir()
    self.src = os.path.join(self.root, "src")
    shutil.rmtree(self.src, ignore_errors=True)
    write_tree(self.src, 12, 5, classes=3)

  def source_examples(self, split):
    folder = os.path.join(self.src, split)
    return sorted((open(os.path.join(folder, c, f), "rb").read(), label)
                  for label, c in enumerate(sorted(os.listdir(folder)))
                  for f in os.listdir(os.path.join(folder, c)))

  def test_build_keeps_the_jpeg_bytes_and_labels_by_sorted_class(self):
    for data_format in ("recordio", "tfrecord"):
      out = os.path.join(self.root, data_format)
      build_dataset.build(self.src, out, data_format, images_per_shard=5, workers=2)
      for split in ("train", "val"):
        found = records.Records(out, data_format, split, num_classes=3)
        self.assertEqual(sorted(found.read(i)[:2] for i in range(len(found))),
                         self.source_examples(split))
      self.assertEqual(open(os.path.join(out, "classes.txt")).read().split(), ["c000", "c001", "c002"])
    self.assertLen(records.split_files(os.path.join(self.root, "tfrecord"), "tfrecord", "train"), 3)

  def test_build_converts_png_and_cmyk_disguised_as_jpeg(self):
    pixels = skimage.data.astronaut()[:30, :50]
    png = os.path.join(self.src, "train", "c000", "png.JPEG")
    cmyk = os.path.join(self.src, "train", "c001", "cmyk.JPEG")
    Image.fromarray(pixels).save(png, "PNG")
    Image.fromarray(pixels).convert("CMYK").save(cmyk, "JPEG")
    out = os.path.join(self.root, "out")
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
      build_dataset.build(self.src, out, "recordio", workers=1)
    for path, kind in ((png, "a PNG image in RGB"), (cmyk, "a JPEG image in CMYK")):
      self.assertIn(f"{path}: {kind}, not an RGB or grayscale JPEG: stored converted to an RGB JPEG (quality 95)",
                    log.getvalue())
    self.assertRegex(log.getvalue(), r"recordio train \[#{30}\] 14/14 \d+/s ETA 0:00:00\n")
    found = records.Records(out, "recordio", "train", num_classes=3)
    self.assertLen(found, 14)
    for i in range(len(found)):
      with Image.open(io.BytesIO(found.read(i)[0])) as image:
        self.assertEqual(image.format, "JPEG")
        self.assertIn(image.mode, ("RGB", "L"))
        self.assertEqual(image.size[::-1], tuple(found.shapes[i]))          # the stored sizes

  def test_build_takes_the_ilsvrc2012_layout_with_its_val_labels_and_class_names(self):
    wnids = ["n01440764", "n01443537", "n02119789"]
    src = os.path.join(self.root, "ilsvrc")
    shutil.rmtree(src, ignore_errors=True)
    labels = write_ilsvrc(src, wnids, 3, 2)
    kaggle, plain, names = (os.path.join(self.root, f) for f in ("LOC_val_solution.csv", "val.txt", "synset_words.txt"))
    with open(kaggle, "w") as f:       # Kaggle's: no extension, the wnid first among the boxes
      f.write("ImageId,PredictionString\n" + "".join(
          f"{os.path.splitext(name)[0]},{wnid} 12 30 200 180 {wnid} 1 2 3 4 \n" for name, wnid in labels.items()))
    with open(plain, "w") as f:
      f.write("".join(f"{name} {wnid}\n" for name, wnid in labels.items()))
    with open(names, "w") as f:
      f.write("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
              "n02119789 kit fox, Vulpes macrotis\nn09999999 unused\n")
    expected = sorted((open(os.path.join(src, "val", name), "rb").read(), wnids.index(wnid))
                      for name, wnid in labels.items())
    for data_format, val_labels in (("recordio", kaggle), ("tfrecord", plain)):
      out = os.path.join(self.root, f"ilsvrc_{data_format}")
      build_dataset.build(src, out, data_format, images_per_shard=4, workers=2, val_labels=val_labels,
                          synset_words=names)
      found = records.Records(out, data_format, "val", num_classes=3)
      self.assertEqual(sorted(found.read(i)[:2] for i in range(len(found))), expected)
      self.assertLen(records.Records(out, data_format, "train", num_classes=3), 9)
      self.assertEqual(open(os.path.join(out, "classes.txt")).read(),
                       "n01440764\ttench, Tinca tinca\nn01443537\tgoldfish, Carassius auratus\n"
                       "n02119789\tkit fox, Vulpes macrotis\n")
    with open(plain, "a") as f:
      f.write("ILSVRC2012_val_00000099.JPEG n01440764\n")
    os.remove(os.path.join(src, "val", "ILSVRC2012_val_00000002.JPEG"))
    with open(os.path.join(src, "val", "stray.JPEG"), "wb") as f:
      f.write(jpeg())
    with self.assertRaises(SystemExit) as raised:
      build_dataset.build(src, os.path.join(self.root, "bad"), "recordio", workers=1, val_labels=plain)
    self.assertIn("1 files in " + os.path.join(src, "val") + " have no label in " + plain + ", e.g. ['stray.JPEG']",
                  str(raised.exception))
    self.assertIn("2 files labelled in " + plain, str(raised.exception))
    with self.assertRaisesRegex(SystemExit, "holds the images themselves: pass --val_labels"):
      build_dataset.build(src, os.path.join(self.root, "bad"), "recordio", workers=1)

  def test_build_stops_on_undecodable_sources_and_lists_them_all(self):
    bad = [os.path.join(self.src, "train", "c000", "garbage.JPEG"),
           os.path.join(self.src, "val", "c001", "cut.JPEG")]
    open(bad[0], "wb").write(b"not an image at all")
    open(bad[1], "wb").write(jpeg()[:600])
    out = os.path.join(self.root, "out")
    with self.assertRaises(SystemExit) as raised:
      build_dataset.build(self.src, out, "recordio", workers=1)
    message = str(raised.exception)
    self.assertIn("2 bad source files", message)
    for path in bad:
      self.assertIn(path, message)
    self.assertFalse(os.path.exists(os.path.join(out, "train.rec")))

  def test_tools_have_help(self):
    for script in ("build_dataset.py", "verify_dataset.py", "make_demo_data.py"):
      result = run_script(script, "--help")
      self.assertEqual(result.returncode, 0, result.stderr)
      self.assertIn("usage:", result.stdout)


class BadInputTest(tf.test.TestCase):
  """Each kind of bad input stops with a message that names the file and the record."""

  def write(self, data_format, examples, split="train", folder=None):
    """One data file of (jpeg, label) examples in folder (default: a new one); (folder, path)."""
    folder = folder or tempfile.mkdtemp(dir=self.get_temp_dir())
    name = records.SPLITS[data_format][split]
    if data_format == "recordio":
      path, writer = os.path.join(folder, name + ".rec"), records.RecordioWriter(os.path.join(folder, name))
    else:
      path = os.path.join(folder, f"{name}-00000-of-00001")
      writer = records.TfrecordWriter(path)
    for example in examples:
      writer.write(*example)
    writer.close()
    return folder, path

  def assertReadFails(self, folder, data_format, pattern):
    with self.assertRaisesRegex(records.DataError, pattern):
      found = records.Records(folder, data_format, "train", num_classes=3)
      for i in range(len(found)):
        found.read(i)

  def test_corrupt_and_truncated_jpeg(self):
    good = jpeg()
    for data_format in ("recordio", "tfrecord"):
      folder, path = self.write(data_format, [(good, 0), (b"\0" * 500, 1), (good[:len(good) // 2], 2)])
      found = records.Records(folder, data_format, "train", num_classes=3)
      self.assertEqual(found.read(0)[1:], (0, (40, 56)))
      with self.assertRaisesRegex(records.DataError, f"{path}: record 1 .*not a JPEG"):
        found.read(1)
      with self.assertRaisesRegex(records.DataError, f"{path}: record 2 .*truncated JPEG"):
        found.read(2)

  def test_label_out_of_range(self):
    folder, path = self.write("recordio", [(jpeg(), 0), (jpeg(), 3)])
    self.assertReadFails(folder, "recordio", f"{path}: record 1 .*label 3 out of range for 3 classes")
    folder, path = self.write("tfrecord", [(jpeg(), 2), (jpeg(), -1)])
    self.assertReadFails(folder, "tfrecord", f"{path}: record 1 .*label 0 \\(1-based\\) out of range")

  def test_a_tfrecord_record_that_is_not_an_example(self):
    folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    path = os.path.join(folder, "train-00000-of-00001")
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg()])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}
    with tf.io.TFRecordWriter(path) as writer:       # good framing and checksums around a payload that is no Example
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
      writer.write(b"\xff" * 30)
    with contextlib.redirect_stderr(io.StringIO()):  # the DALI index it writes on first use
      self.assertReadFails(folder, "tfrecord", f"{path}: record 1 .*not a tf.train.Example")

  def test_missing_empty_and_stale_index(self):
    for data_format in ("recordio", "tfrecord"):
      folder, path = self.write(data_format, [(jpeg(), 0), (jpeg(), 1)])
      idx = records.index_path(path)
      lines = open(idx).read()
      os.remove(idx)
      if data_format == "recordio":
        with self.assertRaisesRegex(records.DataError, f"{idx}: missing index for {path}"):
          data.count_examples(folder, data_format, "train")
      else:                                          # a TFRecord shard gets its DALI index written
        log = io.StringIO()
        with contextlib.redirect_stderr(log):
          self.assertEqual(data.count_examples(folder, data_format, "train"), 2)
        self.assertEqual(log.getvalue(), f"{path}: no DALI index; wrote {idx} (2 records, tfrecord2idx format)\n")
        self.assertEqual(open(idx).read(), lines)
      open(idx, "w").close()
      with self.assertRaisesRegex(records.DataError, f"{idx}: empty index"):
        data.count_examples(folder, data_format, "train")
      open(idx, "w").write(lines)
      open(path, "ab").write(b"\0" * 64)           # the data file grew: the index is stale
      self.assertReadFails(folder, data_format, f"({path}: record 1 |{idx}: ).*stale index")
    # An index of another file: offsets that do not start records.
    folder, path = self.write("recordio", [(jpeg(), 0), (jpeg(80, 90), 1)])
    open(records.index_path(path), "w").write("0\t100\n")
    self.assertReadFails(folder, "recordio", f"{records.sizes_path(path)}: stale sizes for {path}: 4 numbers")
    os.remove(records.sizes_path(path))
    self.assertReadFails(folder, "recordio", f"{path}: record 0 \\(offset 100\\): bad RecordIO magic")

  def test_a_tfrecord_index_goes_to_the_cache_when_the_folder_is_read_only(self):
    folder, path = self.write("tfrecord", [(jpeg(), 0), (jpeg(), 1), (jpeg(), 2)])
    lines = open(records.index_path(path)).read()
    os.remove(records.index_path(path))
    cache = os.path.join(self.get_temp_dir(), "index_cache")
    write = records._write_atomically

    def read_only(index, text):                      # root ignores file modes: refuse like a read-only mount
      if os.path.dirname(index) == folder:
        raise OSError(30, "Read-only file system", index)
      write(index, text)
    with mock.patch.object(records, "INDEX_CACHE", cache), mock.patch.object(records, "_write_atomically", read_only):
      log = io.StringIO()
      with contextlib.redirect_stderr(log):
        found = records.Records(folder, "tfrecord", "train")
      self.assertEqual(found.index_paths, [os.path.join(cache, path.strip(os.sep).replace(os.sep, "%") + ".idx")])
      self.assertEqual(open(found.index_paths[0]).read(), lines)
      self.assertIn(f"wrote {found.index_paths[0]} (3 records", log.getvalue())
      self.assertEqual(records.Records(folder, "tfrecord", "train").index_paths, found.index_paths)   # found again

  def test_the_message_reaches_the_training_loop(self):
    # The exact sampler names the record; DALI's readers stop with DALI's message, to which the data
    # layer adds the file and the pointer to verify_dataset.py.
    for data_format in ("recordio", "tfrecord"):
      folder, path = self.write(data_format, [(jpeg(), 0), (b"\xff\xd8\xff\xe0 broken", 1)])
      reader_message = (f"(?s)decoders.image_random_crop.*while reading {path}: a corrupt record or JPEG\\? "
                        f"scripts/verify_dataset.py {folder}")
      for backend, sampler, message in (("tfdata", "exact", f"{path}: record 1 .*corrupt JPEG"),
                                        ("dali", "exact", f"{path}: record 1 .*corrupt JPEG"),
                                        ("dali", "dali", reader_message)):
        dataset = data.train_dataset(backend, data_dir=folder, data_format=data_format, batch_size=2, image_size=32,
                                     dtype="fp32", num_classes=3, rank=0, size=1, seed=0, steps_per_epoch=1,
                                     num_examples=2, threads=1, sampler=sampler)
        with self.assertRaisesRegex(Exception, message):
          next(iter(dataset))
    folder, path = self.write("recordio", [(jpeg(), 0), (jpeg(), 1)])
    with open(path, "r+b") as f:                      # a corrupt record: DALI's reader names the check
      f.seek(int(open(records.index_path(path)).read().split()[3]))
      f.write(b"\0\0\0\0")
    dataset = data.train_dataset("dali", data_dir=folder, data_format="recordio", batch_size=2, image_size=32,
                                 dtype="fp32", num_classes=3, rank=0, size=1, seed=0, steps_per_epoch=1,
                                 num_examples=2, threads=1, sampler="dali")
    with self.assertRaisesRegex(records.DataError, f"(?s)Invalid RecordIO: wrong magic number.*while reading {path}"):
      next(iter(dataset))

  def test_verify_passes_good_data_and_lists_every_bad_record(self):
    folder, path = self.write("recordio", [(jpeg(), 0), (jpeg(), 1), (jpeg(), 2)])
    self.write("recordio", [(jpeg(), 0)], "val", folder)
    result = run_script("verify_dataset.py", folder, "--num_classes", "3", "--workers", "1")
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    self.assertIn("OK (recordio)", result.stdout)
    with open(records.sizes_path(path), "w") as f:                      # record 1's stored size is wrong
      f.write("40 56\n41 56\n40 56\n")
    result = run_script("verify_dataset.py", folder, "--num_classes", "3", "--workers", "1")
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    self.assertRegex(result.stdout, f"{path}: record 1 .*the stored size 41x56 .* is not the JPEG's 40x56")
    good = jpeg()
    self.write("recordio", [(good, 0), (b"junk" * 50, 1), (good, 7), (good[:len(good) // 2], 2)],
               "train", folder)
    result = run_script("verify_dataset.py", folder, "--num_classes", "3", "--workers", "1")
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    for record, problem in ((1, "not a JPEG"), (2, "label 7 out of range"), (3, "truncated JPEG")):
      self.assertRegex(result.stdout, f"{path}: record {record} .*{problem}")
    self.assertIn("class 1 has no training examples", result.stdout)

  def test_verify_checks_tfrecord_checksums(self):
    good = [(jpeg(), 0), (jpeg(), 1), (jpeg(), 2)]
    folder, path = self.write("tfrecord", good)
    self.write("tfrecord", good, "val", folder)
    raw = bytearray(open(path, "rb").read())
    raw[-100] ^= 0x55                               # inside the last record's JPEG data
    open(path, "wb").write(bytes(raw))
    result = run_script("verify_dataset.py", folder, "--num_classes", "3", "--workers", "1")
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    self.assertRegex(result.stdout, f"{path}: .*(corrupt|checksum|crc)")


class DemoDataTest(tf.test.TestCase):

  def test_demo_images_are_deterministic_varied_jpegs(self):
    made = []
    for attempt in range(2):
      out = os.path.join(self.get_temp_dir(), f"demo{attempt}")
      make_demo_data.make_images(out, 8, {"train": 2, "val": 1}, seed=0)
      made.append({os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
                   for d, _, files in os.walk(out) for f in files})
    self.assertEqual(made[0], made[1])
    self.assertLen(made[0], 24)
    self.assertLen({p.split(os.sep)[1] for p in made[0]}, 8)
    images = [Image.open(io.BytesIO(b)) for b in made[0].values()]
    self.assertEqual({i.format for i in images}, {"JPEG"})
    self.assertEqual({i.mode for i in images}, {"RGB", "L"})
    self.assertGreater(len({i.size for i in images}), 15)
    self.assertGreater(len({round(i.size[0] / i.size[1], 1) for i in images}), 5)
