"""scripts/build_dataset.py, verify_dataset.py, make_demo_data.py, and the messages for bad input."""
import io
import os
import shutil
import subprocess
import sys
import tempfile

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
  return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *args],
                        capture_output=True, text=True, timeout=300)


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
    Image.fromarray(pixels).save(os.path.join(self.src, "train", "c000", "png.JPEG"), "PNG")
    Image.fromarray(pixels).convert("CMYK").save(os.path.join(self.src, "train", "c001", "cmyk.JPEG"), "JPEG")
    out = os.path.join(self.root, "out")
    build_dataset.build(self.src, out, "recordio", workers=1)
    found = records.Records(out, "recordio", "train", num_classes=3)
    self.assertLen(found, 14)
    for i in range(len(found)):
      with Image.open(io.BytesIO(found.read(i)[0])) as image:
        self.assertEqual(image.format, "JPEG")
        self.assertIn(image.mode, ("RGB", "L"))

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

  def test_missing_empty_and_stale_index(self):
    for data_format in ("recordio", "tfrecord"):
      folder, path = self.write(data_format, [(jpeg(), 0), (jpeg(), 1)])
      idx = records.index_path(path)
      lines = open(idx).read()
      os.remove(idx)
      with self.assertRaisesRegex(records.DataError, f"{idx}: missing index for {path}"):
        data.count_examples(folder, data_format, "train")
      open(idx, "w").close()
      with self.assertRaisesRegex(records.DataError, f"{idx}: empty index"):
        data.count_examples(folder, data_format, "train")
      open(idx, "w").write(lines)
      open(path, "ab").write(b"\0" * 64)           # the data file grew: the index is stale
      self.assertReadFails(folder, data_format, f"({path}: record 1 |{idx}: ).*stale index")
    # An index of another file: offsets that do not start records.
    folder, path = self.write("recordio", [(jpeg(), 0), (jpeg(80, 90), 1)])
    open(records.index_path(path), "w").write("0\t100\n")
    self.assertReadFails(folder, "recordio", f"{path}: record 0 \\(offset 100\\): bad RecordIO magic")

  def test_the_message_reaches_the_training_loop(self):
    folder, path = self.write("recordio", [(jpeg(), 0), (b"\xff\xd8\xff\xe0 broken", 1)])
    for backend in ("tfdata", "dali"):
      dataset = data.train_dataset(backend, data_dir=folder, data_format="recordio", batch_size=2,
                                   image_size=32, dtype="fp32", num_classes=3, rank=0, size=1,
                                   seed=0, steps_per_epoch=1, num_examples=2, threads=1)
      with self.assertRaisesRegex(Exception, f"{path}: record 1 .*corrupt JPEG"):
        next(iter(dataset))

  def test_verify_passes_good_data_and_lists_every_bad_record(self):
    folder, path = self.write("recordio", [(jpeg(), 0), (jpeg(), 1), (jpeg(), 2)])
    self.write("recordio", [(jpeg(), 0)], "val", folder)
    result = run_script("verify_dataset.py", folder, "--num_classes", "3", "--workers", "1")
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    self.assertIn("OK (recordio)", result.stdout)
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
