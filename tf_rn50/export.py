"""A trained run as files to serve: the Keras model, a TF SavedModel with the eval preprocessing inside, and
the class list.

  python -m tf_rn50.export --output_dir=RUN [--checkpoint_path=PATH] --out=DIR

The flags come from RUN/flags.cfg (tf_rn50.main writes it at init; flags given here override it, and
stand in for it in a run that has none): the model and optimizer are built as the run built them, then
the newest checkpoint of RUN/checkpoints (or --checkpoint_path) is restored. DIR gets:
  model.keras    the network in float32 with plain Keras layers (keras.saving.load_model needs no tf_rn50):
                 normalized images [batch, S, S, 3] float32 -> logits [batch, classes]
  saved_model/   a TF SavedModel (tf.saved_model.load needs no tf_rn50) with two signatures, both returning
                 {"probabilities", "logits"}: "serving_default" takes `jpegs`, a string tensor [batch] of
                 JPEG files; "images" takes decoded RGB images, uint8 [batch, height, width, 3]. Inside: the
                 eval preprocessing of tf_rn50.data (central square, resized to S x S, normalized).
  classes.txt    the dataset's classes.txt: one line per class in label order, `wnid` or `wnid<TAB>name`
"""
import contextlib
import io
import os
import shutil

from absl import app, flags, logging

from tf_rn50 import flags as tf_rn50_flags
from tf_rn50.classify import CLASSES, read_classes
from tf_rn50.data import sampling

FLAGS = tf_rn50_flags.FLAGS
flags.DEFINE_string("out", None, "Folder to write model.keras, saved_model/ and classes.txt to (an earlier "
                    "export there is replaced; a folder holding anything else is refused).")


def inference_model(net):
  """The trained network as a float32 model of stock Keras layers with its weights: our BatchNorm differs
  from Keras' only in training, and float32 runs anywhere (mixed precision is for training on GPUs)."""
  import keras
  from tf_rn50 import model

  def plain(layer):
    cls = keras.layers.BatchNormalization if isinstance(layer, model.BatchNorm) else type(layer)
    return cls.from_config({**layer.get_config(), "dtype": "float32"})
  images = keras.Input(net.inputs[0].shape[1:], dtype="float32", name="images")
  inference = keras.models.clone_model(net, input_tensors=images, clone_function=plain)
  inference.set_weights(net.get_weights())
  return inference


def eval_window(height, width, image_size):
  """(y, x, side) of sampling.center_crops' window in TF ops: np.round and tf.round both round half to even,
  and both compute in float64."""
  import tensorflow as tf
  resized = round(image_size * sampling.EVAL_RESIZE)   # the shorter side, had the whole image been resized
  side = tf.round(tf.cast(tf.minimum(height, width), tf.float64) * image_size / resized)
  side = tf.maximum(1, tf.cast(side, tf.int32))
  return (height - side) // 2, (width - side) // 2, side


def preprocess(image_size):
  """(from_jpeg, from_images): the eval preprocessing of tf_rn50.data as TF ops, for one JPEG string ->
  float32 [image_size, image_size, 3], or for uint8 images [batch, height, width, 3] -> float32
  [batch, image_size, image_size, 3]. The window of sampling.center_crops, then the decoder, resize and
  normalization of the tf.data eval pipeline (and of DALI's with the exact sampler, the default)."""
  import tensorflow as tf
  mean, std = tf.constant(sampling.MEAN, tf.float32), tf.constant(sampling.STD, tf.float32)

  def finish(crop):
    crop = tf.image.resize(crop, [image_size, image_size], method="bilinear", antialias=True)
    return (crop - mean) / std

  def from_jpeg(jpeg):
    shape = tf.io.extract_jpeg_shape(jpeg)
    y, x, side = eval_window(shape[0], shape[1], image_size)
    return finish(tf.io.decode_and_crop_jpeg(jpeg, tf.stack([y, x, side, side]), channels=3,
                                             dct_method="INTEGER_ACCURATE"))

  def from_images(images):   # one height and width per batch: one window for all
    y, x, side = eval_window(tf.shape(images)[1], tf.shape(images)[2], image_size)
    return finish(images[:, y:y + side, x:x + side])
  return from_jpeg, from_images


def write(net, classes, out):
  """Writes out/model.keras, out/saved_model/ and out/classes.txt (replacing `out`) for a tf_rn50 network."""
  import keras
  import tensorflow as tf
  inference = inference_model(net)
  image_size = inference.inputs[0].shape[1]
  from_jpeg, from_images = preprocess(image_size)

  def outputs(images):
    logits = inference(images, training=False)
    return {"probabilities": tf.nn.softmax(logits), "logits": logits}

  def serve_jpegs(jpegs):
    spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)
    return outputs(tf.map_fn(from_jpeg, jpegs, fn_output_signature=spec))

  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  inference.save(os.path.join(out, "model.keras"))
  archive = keras.export.ExportArchive()
  archive.track(inference)
  archive.add_endpoint("serving_default", serve_jpegs, input_signature=[tf.TensorSpec([None], tf.string, "jpegs")])
  archive.add_endpoint("images", lambda images: outputs(from_images(images)),
                       input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, "images")])
  with contextlib.redirect_stdout(io.StringIO()):   # Keras lists the endpoints; the module docstring says them
    archive.write_out(os.path.join(out, "saved_model"))
  with open(os.path.join(out, CLASSES), "w") as f:
    f.write("".join(f"{wnid}\t{name}\n" if name else f"{wnid}\n" for wnid, name in classes))


def parse_with_run_flags(argv):
  """absl parsing with RUN/flags.cfg read first (when there), so that the command line overrides it."""
  first = flags.FlagValues()   # finds --output_dir alone: the full set validates only with the run's flags
  flags.DEFINE_string("output_dir", None, "", flag_values=first)
  first(argv, known_only=True)
  saved = os.path.join(first.output_dir or "", tf_rn50_flags.RUN_FLAGFILE)
  found = os.path.isfile(saved)
  try:
    return FLAGS([argv[0], *([f"--flagfile={saved}"] if found else []), *argv[1:]])
  except flags.Error as e:
    hint = "" if found else (f"\n--output_dir={first.output_dir} has no {tf_rn50_flags.RUN_FLAGFILE} (tf_rn50.main "
                             "writes it at init): give the flags the run trained with, e.g. --flagfile=...")
    raise SystemExit(f"FATAL Flags parsing error: {e}{hint}") from None


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # not TF's notes on saving
  if os.path.isdir(FLAGS.out) and set(os.listdir(FLAGS.out)) - {"model.keras", "saved_model", CLASSES}:
    raise SystemExit(f"--out={FLAGS.out}: holds more than an export; not replacing it")
  from tf_rn50 import build
  if FLAGS.data_backend == "synthetic":
    classes = [(str(label), "") for label in range(FLAGS.num_classes)]   # no dataset: the labels are the classes
  else:
    classes = read_classes(os.path.join(FLAGS.data_dir, CLASSES), FLAGS.num_classes)
  plan = tf_rn50_flags.make_plan(1)
  net, optimizer = build.model_and_optimizer(build.learning_rate_schedule(plan))
  where, epochs_done = build.restore_trained(net, optimizer)
  write(net, classes, FLAGS.out)
  print(f"exported {where} (after epoch {epochs_done}) to {FLAGS.out}: model.keras, saved_model/, {CLASSES} "
        f"({len(classes)} classes, {FLAGS.image_size}x{FLAGS.image_size})", flush=True)
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main, flags_parser=parse_with_run_flags)
