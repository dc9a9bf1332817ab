"""After training: --mode=eval on 2 ranks, tf_rn50.export, the exported files in a fresh process, classify.

The README's demo run (conftest.demo_run) gives the checkpoint and the export: 1 rank, DALI on the demo data's
10 classes (400 train, 330 val) at 32x32, checkpointed after the eval that reached the target; demo.sh then
exports it. The reference is the training model restored from that checkpoint, on the tf.data eval
pipeline's images."""
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from launch import REPO, env, run_main
from tf_rn50 import callbacks, export, model, optim, train
from tf_rn50 import data as tf_rn50_data
from tf_rn50.data import records, sampling

CLASSES, VAL = 10, 330
JPEGS = 16   # the val JPEGs that the served and classified paths check one by one


def run_module(module, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env(), capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(demo_run, demo_data):
  """(run folder, data folder) of the demo's run, which must have reached the target (demo.sh exports only then)."""
  done, results = demo_run
  assert done.returncode == 0, done.stdout[-3000:]
  return results / "run_2", demo_data / "recordio"


@pytest.fixture(scope="module")
def checkpoint(run):
  """The run's one checkpoint (--keep_checkpoints=1), saved after the block whose eval reached the target."""
  return tf.train.latest_checkpoint(str(run[0] / "checkpoints"))


def decoded_whole(jpeg, image_size):
  """A client's path: the whole JPEG decoded, then the eval window (sampling.center_crops) cut, resized and
  normalized by hand."""
  image = tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE")
  x, y, width, height = sampling.center_crops(np.array(image.shape[:1]), np.array(image.shape[1:2]), image_size)[0]
  image = tf.image.resize(image[y:y + height, x:x + width], [image_size, image_size], antialias=True)
  return (image - sampling.MEAN) / sampling.STD


@pytest.fixture(scope="module")
def reference(run, checkpoint):
  """The first JPEGS val JPEGs in record order; the labels and the logits of the training model (fp32, LARS with a
  schedule, as the run built it) restored from the run's checkpoint, on the tf.data eval pipeline's images of
  the whole val split; and its logits on those JPEGs decoded whole (decoded_whole)."""
  _, data = run
  net = model.resnet50(CLASSES, (32, 32, 3))
  lars = optim.LARS(optim.WarmupPolyDecay(1.0, 0, 6, 1e-4, 2.0))
  lars.build(net.trainable_variables)
  assert callbacks.restore(checkpoint, net, lars) == int(checkpoint.rsplit("-", 1)[1])
  images, labels = next(iter(tf_rn50_data.eval_dataset(
      "tfdata", data_dir=str(data), data_format="recordio", batch_size=VAL, image_size=32, dtype="fp32",
      num_classes=CLASSES, rank=0, size=1, num_examples=VAL)))
  val = records.Records(str(data), "recordio", "val")
  jpegs = [val.read(i)[0] for i in range(JPEGS)]
  whole = tf.stack([decoded_whole(jpeg, 32) for jpeg in jpegs])
  return jpegs, labels.numpy(), images.numpy(), net(images, training=False).numpy(), net(whole, training=False).numpy()


@pytest.fixture(scope="module")
def evaluated(run):
  """--mode=eval on 2 ranks, as a user runs it on the trained run: the CompletedProcess, and the run's
  mlperf.log before it."""
  out, _ = run
  mlperf_log = (out / "mlperf.log").read_text()
  return run_main(f"--flagfile={out / 'flags.cfg'}", "--mode=eval", ranks=2), mlperf_log


@pytest.fixture(scope="module")
def exported(demo_run, checkpoint):
  """demo.sh's export of the run: `python -m tf_rn50.export --output_dir=RUN --out=RESULTS/model`."""
  done, results = demo_run
  model = results / "model"
  assert re.search(f"^exported {re.escape(checkpoint)} \\(after epoch \\d+\\) to {re.escape(str(model))}: ",
                   done.stdout, re.M), done.stdout[-3000:]
  return model


def test_eval_mode_evaluates_the_checkpoint_once_on_two_ranks(run, checkpoint, reference, evaluated):
  out, _ = run
  result, mlperf_log = evaluated
  assert result.returncode == 0, result.stdout[-3000:]
  lines = [line.split("<stdout>:", 1)[1] for line in result.stdout.splitlines() if "<stdout>:" in line]
  printed = [json.loads(line) for line in lines if line.startswith('{"mode": "eval"')]
  assert len(printed) == 1 and not any(line.startswith("[1]<stdout>:eval") for line in result.stdout.splitlines())
  found = printed[0]
  _, labels, _, logits, _ = reference
  top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
  assert found["top1"] == pytest.approx(np.mean(np.argmax(logits, 1) == labels), abs=1e-6)
  assert found["top5"] == pytest.approx(np.mean([label in top for label, top in zip(labels, top5)]), abs=1e-6)
  assert found["top1"] <= found["top5"]
  # 165 examples a rank in batches of 32: each rank's last batch is padded
  assert (found["examples"], found["ranks"], found["epochs_done"]) == (VAL, 2, int(checkpoint.rsplit("-", 1)[1]))
  assert found["checkpoint"] == checkpoint
  assert f"top-1 {found['top1']:.5f}  top-5 {found['top5']:.5f}  on {VAL} examples" in result.stdout
  assert json.loads((out / "eval.jsonl").read_text().splitlines()[-1]) == found
  assert ":::MLLOG" not in result.stdout and (out / "mlperf.log").read_text() == mlperf_log


def test_the_export_reloads_without_tf_rn50_and_gives_the_training_models_outputs(run, exported, reference, tmp_path):
  jpegs, _, images, logits, whole_logits = reference
  for i, jpeg in enumerate(jpegs):
    (tmp_path / f"{i:02d}.jpg").write_bytes(jpeg)
  np.save(tmp_path / "images.npy", images)
  script = textwrap.dedent(f"""
      import glob, sys
      sys.modules["tf_rn50"] = None                     # any import of tf_rn50 fails
      import keras, numpy as np, tensorflow as tf
      jpegs = [open(p, "rb").read() for p in sorted(glob.glob("{tmp_path}/*.jpg"))]
      served = tf.saved_model.load("{exported}/saved_model")
      from_jpegs = served.signatures["serving_default"](jpegs=tf.constant(jpegs))
      decoded = [tf.io.decode_jpeg(j, channels=3, dct_method="INTEGER_ACCURATE")[None] for j in jpegs]
      from_images = [served.signatures["images"](images=d)["logits"][0] for d in decoded]
      net = keras.saving.load_model("{exported}/model.keras")
      np.savez("{tmp_path}/out.npz", logits=from_jpegs["logits"], probabilities=from_jpegs["probabilities"],
               images=np.stack(from_images), keras=net(np.load("{tmp_path}/images.npy")),
               modules=[m for m, v in sys.modules.items() if m.startswith("tf_rn50") and v is not None])
  """)
  fresh = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env(), capture_output=True, text=True,
                         timeout=300)
  assert fresh.returncode == 0, fresh.stderr[-3000:]
  with np.load(tmp_path / "out.npz") as out:
    assert list(out["modules"]) == []
    scale = np.abs(logits).max()                   # float32 noise of the graph and batching is relative to it
    np.testing.assert_allclose(out["keras"], logits, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(out["logits"], logits[:JPEGS], rtol=1e-4, atol=1e-5 * scale)  # the preprocessing inside
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(logits[:JPEGS]), atol=1e-5)
    # Decoded whole, the image differs from the pipeline's ROI decode at the window's border (chroma upsampling).
    np.testing.assert_allclose(out["images"], whole_logits, rtol=1e-4, atol=1e-5 * scale)
  classes = (run[1] / "classes.txt").read_text()
  assert (exported / "classes.txt").read_text() == classes
  assert classes.startswith("astronaut\tastronaut Eileen Collins\n")


def classify(*args):
  done = run_module("tf_rn50.classify", *args)
  return done.returncode, done.stdout, done.stderr


def test_classify_prints_the_top_5_classes_with_names(exported, reference, tmp_path):
  from PIL import Image
  jpegs, _, _, logits, _ = reference
  paths = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "a.png"]
  for path, jpeg in zip(paths, jpegs):
    path.write_bytes(jpeg)
  Image.open(paths[0]).save(paths[2])
  status, stdout, stderr = classify(exported, *paths)
  assert status == 0, stderr[-3000:]
  names = [line.rstrip("\n").split("\t") for line in (exported / "classes.txt").read_text().splitlines()]
  lines = stdout.splitlines()
  assert [lines[6 * i] for i in range(3)] == [str(p) for p in paths] and len(lines) == 18, stdout
  for i in range(2):   # the JPEGs: the training model's top 5, in order, with the dataset's names
    probabilities = tf.nn.softmax(logits[i]).numpy()
    expected = [f"  {probabilities[c]:.4f}  {names[c][0]}  {names[c][1]}"
                for c in np.argsort(-probabilities, kind="stable")[:5]]
    assert lines[6 * i + 1:6 * i + 6] == expected, stdout
  # The PNG (the first JPEG's pixels as PIL decodes them) goes through the "images" signature.
  first = tf.nn.softmax(logits[0]).numpy()
  png = [(float(line.split()[0]), line.split()[1]) for line in lines[13:18]]
  assert [p for p, _ in png] == sorted((p for p, _ in png), reverse=True), stdout
  for probability, wnid in png:
    assert abs(probability - first[[n[0] for n in names].index(wnid)]) < 0.01, stdout


def test_classify_names_bad_input(exported, tmp_path):
  (tmp_path / "notes.txt").write_text("not an image\n")
  (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
  status, _, stderr = classify(exported, tmp_path / "missing.jpg", tmp_path / "notes.txt", tmp_path / "cut.jpg")
  assert status != 0
  assert f"{tmp_path / 'missing.jpg'}: no such file" in stderr, stderr
  assert f"{tmp_path / 'notes.txt'}: not an image that TensorFlow decodes" in stderr, stderr
  assert f"{tmp_path / 'cut.jpg'}: not an image that TensorFlow decodes" in stderr, stderr
  bare = tmp_path / "bare"
  bare.mkdir()
  (bare / "saved_model").symlink_to(exported / "saved_model")
  status, _, stderr = classify(bare, tmp_path / "notes.txt")
  assert status != 0 and f"{bare}: no classes.txt beside saved_model/" in stderr, stderr


def test_export_names_what_is_missing(run, checkpoint, tmp_path):
  done = run_module("tf_rn50.export", f"--output_dir={tmp_path}", f"--out={tmp_path / 'model'}")
  assert done.returncode != 0 and f"--output_dir={tmp_path} has no flags.cfg" in done.stderr, done.stderr[-3000:]
  empty = tmp_path / "empty"
  empty.mkdir()
  done = run_module("tf_rn50.export", f"--output_dir={run[0]}", f"--checkpoint_path={empty}",
                    f"--out={tmp_path / 'model'}")
  assert done.returncode != 0, done.stdout[-3000:]
  assert f"--checkpoint_path={empty}: no checkpoint in {empty}" in done.stderr, done.stderr[-3000:]
  assert not (tmp_path / "model").exists()
  done = run_module("tf_rn50.export", f"--output_dir={run[0]}", f"--out={run[0]}")   # a slip that would delete the run
  assert done.returncode != 0 and f"--out={run[0]}: holds more than an export; not replacing it" in done.stderr
  assert tf.io.gfile.exists(checkpoint + ".index")


def test_the_serving_window_is_the_eval_pipelines():
  # 12, 20 and 36 at 224 are ties (x.5 before rounding), which both sides round to even.
  heights = (1, 2, 7, 12, 20, 31, 32, 36, 37, 100, 255, 256, 257, 375, 500)
  sizes = np.array([(h, w) for h in heights for w in (1, 9, 37, 333, 500)])
  for image_size in (32, 224):
    windows = sampling.center_crops(sizes[:, 0], sizes[:, 1], image_size)
    for (height, width), window in zip(sizes, windows):
      y, x, side = (int(v) for v in export.eval_window(tf.constant(int(height)), tf.constant(int(width)), image_size))
      assert [x, y, side, side] == window.tolist(), (height, width, image_size)


def test_the_top_5_eval_step_counts_real_examples_and_breaks_ties_as_top_1():
  import keras
  net = keras.Sequential([keras.Input((7,)), keras.layers.Identity()])    # the logits are the inputs
  logits = tf.constant([[0., 6, 5, 4, 3, 2, 1],     # label 6: 7th -> miss
                        [0., 6, 5, 4, 3, 2, 1],     # label 2: top-5, not top-1
                        [1., 1, 1, 1, 1, 1, 1],     # a 7-way tie: class 0 is the top-1, classes 0-4 the top-5
                        [1., 1, 1, 1, 1, 1, 1],     # label 5 is outside those
                        [0., 6, 5, 4, 3, 2, 1]])    # padding never counts
  step = train.make_eval_step(net, xla=False, top5=True)
  assert step(logits, tf.constant([6, 2, 0, 5, -1])).numpy().tolist() == [1, 2, 4]
  assert train.make_eval_step(net, xla=False)(logits, tf.constant([6, 2, 0, 5, -1])).numpy().tolist() == [1, 4]
