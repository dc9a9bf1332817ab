"""The top-5 classes of images, by a model that tf_rn50.export wrote.

  python -m tf_rn50.classify MODEL IMAGE...

MODEL is the export folder (saved_model/ and classes.txt). JPEGs go to the SavedModel as files, through
the decoder the training used; PNG, GIF and BMP are decoded here and sent as pixels. Every image is
checked before the model loads: a missing file or one that does not decode stops with its name.
"""
import argparse
import os
import re
import sys

import numpy as np

CLASSES = "classes.txt"   # as tf_rn50.export writes it
TOP = 5


def read_classes(path, num_classes=None):
  """[(wnid, name)] of a class list (a dataset's or an export's classes.txt), in label order; one line per
  class, `wnid` or `wnid<TAB>name` (the name is "" when the line has none)."""
  if not os.path.isfile(path):
    raise SystemExit(f"{path}: missing: no class list (one line per class: `wnid` or `wnid<TAB>name`)")
  classes = []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      wnid, _, name = line.rstrip("\n").partition("\t")
      if not wnid or wnid != wnid.strip() or "\t" in name:
        raise SystemExit(f"{path}: line {line_no} is not `wnid` or `wnid<TAB>name`: {line.rstrip()!r}")
      classes.append((wnid, name))
  if num_classes is not None and len(classes) != num_classes:
    raise SystemExit(f"{path}: {len(classes)} classes, the model has {num_classes}")
  return classes


def read_images(paths):
  """{path: (file bytes, uint8 [height, width, 3] pixels)}; fails naming every file that is missing or no image."""
  import tensorflow as tf
  images, bad = {}, []
  for path in paths:
    if not os.path.isfile(path):
      bad.append(f"{path}: no such file")
      continue
    with open(path, "rb") as f:
      data = f.read()
    try:
      images[path] = data, tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
      reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", e.message.splitlines()[0])   # TF's op names off
      bad.append(f"{path}: not an image that TensorFlow decodes (JPEG, PNG, GIF, BMP): {reason}")
  if bad:
    raise SystemExit("\n  ".join(["bad input:", *bad]))
  return images


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("model", help="A folder written by tf_rn50.export.")
  parser.add_argument("images", nargs="+", metavar="image")
  args = parser.parse_args()
  saved_model = os.path.join(args.model, "saved_model")
  if not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
    raise SystemExit(f"{args.model}: not an exported model (no saved_model/; python -m tf_rn50.export writes one)")
  if not os.path.isfile(os.path.join(args.model, CLASSES)):
    raise SystemExit(f"{args.model}: no {CLASSES} beside saved_model/: the model has no class names to give")
  classes = read_classes(os.path.join(args.model, CLASSES))
  images = read_images(args.images)

  import tensorflow as tf
  served = tf.saved_model.load(saved_model)
  for path, (data, pixels) in images.items():
    if data[:2] == b"\xff\xd8":
      probabilities = served.signatures["serving_default"](jpegs=tf.constant([data]))["probabilities"]
    else:
      probabilities = served.signatures["images"](images=pixels[None])["probabilities"]
    probabilities = probabilities.numpy()[0]
    if len(probabilities) != len(classes):
      raise SystemExit(f"{args.model}: the model has {len(probabilities)} classes, {CLASSES} lists {len(classes)}")
    print(path)
    for label in np.argsort(-probabilities, kind="stable")[:TOP]:
      wnid, name = classes[label]
      print(f"  {probabilities[label]:.4f}  {wnid}{'  ' + name if name else ''}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
