"""python -m tf_rn50.bench infer: the exported model vs keras.applications.ResNet50, inference."""
import os
import tempfile
import time

from tf_rn50.bench.common import PHOTOS, figure, interleaved, ratio


def encoded_photos(count, shorter, seed=0):
  """`count` JPEGs (quality 90) cropped from skimage's photos, 4:3 landscape, `shorter` pixels high."""
  import io
  import numpy as np
  import skimage.data
  from PIL import Image
  rng = np.random.default_rng(seed)
  jpegs = []
  for i in range(count):
    photo = Image.fromarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
    h = int(photo.height * rng.uniform(0.6, 1.0))
    w = min(photo.width, h * 4 // 3)
    x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
    out = io.BytesIO()
    photo.crop((x, y, x + w, y + h)).resize((shorter * 4 // 3, shorter), Image.BILINEAR).save(out, "JPEG", quality=90)
    jpegs.append(out.getvalue())
  return jpegs


def timed_calls(call, count):
  """run() -> (seconds, CPU seconds of this process's threads) for `count` calls of call(), each result read
  back to the host. CPU time does not count the waits for a core, so it holds under others' load."""
  def run():
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
      [value.numpy() for value in call().values()]
    return time.perf_counter() - start, time.process_time() - start_cpu
  return run


def run(args):
  import keras
  import tensorflow as tf
  from tf_rn50 import export, model
  from tf_rn50.data import sampling
  batch_size, image_size = args.batch_size or (4 if args.quick else 32), args.image_size or (32 if args.quick else 224)
  num_classes, calls, reps = (10, 1, 1) if args.quick else (1000, 1, 9)
  print(f"infer: batch {batch_size}, {image_size}x{image_size}, {num_classes} classes, float32, {calls} batches per "
        f"repetition, {reps} repetitions; an untrained model through tf_rn50.export.write", flush=True)
  shape, shorter = (image_size, image_size, 3), round(image_size * sampling.EVAL_RESIZE)
  images = tf.random.stateless_normal([batch_size, *shape], [0, 0])      # as the eval pipeline gives them
  pixels = tf.cast(tf.random.stateless_uniform([batch_size, shorter, shorter * 4 // 3, 3], [0, 1], 0, 256, tf.int32),
                   tf.uint8)                                            # as a client decodes them
  jpegs = tf.constant(encoded_photos(batch_size, shorter))
  with tempfile.TemporaryDirectory() as folder:
    export.write(model.resnet50(num_classes, shape), [(str(c), "") for c in range(num_classes)], folder)
    ours = keras.saving.load_model(os.path.join(folder, "model.keras"))
    served = tf.saved_model.load(os.path.join(folder, "saved_model"))
  theirs = keras.applications.ResNet50(weights=None, input_shape=shape, classes=num_classes)   # ends in softmax
  ours_probabilities = tf.function(lambda x: {"probabilities": tf.nn.softmax(ours(x, training=False))})
  keras_probabilities = tf.function(lambda x: {"probabilities": theirs(x, training=False)})
  seconds = interleaved({
      "ours": timed_calls(lambda: ours_probabilities(images), calls),
      "keras": timed_calls(lambda: keras_probabilities(images), calls),
      "images": timed_calls(lambda: served.signatures["images"](images=pixels), calls),
      "jpegs": timed_calls(lambda: served.signatures["serving_default"](jpegs=jpegs), calls),
  }, reps)
  labels = (("ours", "model.keras (v1.5), normalized images"),
            ("keras", "keras.applications.ResNet50 (v1), normalized images"),
            ("images", "SavedModel, uint8 images (+ crop, resize, normalize)"),
            ("jpegs", "SavedModel, JPEG files (+ decode, crop, resize, normalize)"))
  for clock, unit in ((0, "img/s"), (1, "img/cpu-s")):     # images per second, per CPU-second
    rate = {name: figure(f"infer ({unit}): {label}", [batch_size * calls / s[clock] for s in seconds[name]], unit)
            for name, label in labels}
    ratio(f"infer ({unit}): exported model.keras / keras.applications.ResNet50", rate["ours"] / rate["keras"])
    ratio(f"infer ({unit}): SavedModel on uint8 images / model.keras (preprocessing)", rate["images"] / rate["ours"])
    ratio(f"infer ({unit}): SavedModel on JPEGs / on uint8 images (decoding)", rate["jpegs"] / rate["images"])
