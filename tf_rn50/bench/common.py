"""What every benchmark shares: the machine and load lines, the interleaved timing, the figure and
ratio lines; the photos and ImageNet-like JPEGs and the batch timing of the input benchmarks."""
import os
import platform
import re
import statistics
import time

# skimage's bundled colour photos (no download), the sources of the input benchmark's JPEGs.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SKIP_BATCHES = 3       # input, feed: untimed batches on a fresh iterator before timing (start-up, queues)


def machine():
  import horovod
  import keras
  import nvidia.dali
  import tensorflow as tf
  with open("/proc/cpuinfo") as f:
    cpuinfo = f.read()
  cpu = re.search(r"model name\s*:\s*(.*)", cpuinfo)
  isa = [x for x in ("avx512f", "avx512_bf16", "amx_bf16") if re.search(rf"\b{x}\b", cpuinfo)]
  print(f"machine: {cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores "
        f"({' '.join(isa) or 'no avx512'}), python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, horovod {horovod.__version__}, dali {nvidia.dali.__version__}", flush=True)


def load():
  print(f"load: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average (1/5/15 min) "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def interleaved(contenders, reps):
  """{name: run}, run() -> seconds of one timed repetition. Warms each up once, then runs them in
  turn `reps` times; returns {name: [seconds, ...]}."""
  for run in contenders.values():
    run()
  seconds = {name: [] for name in contenders}
  for _ in range(reps):
    for name, run in contenders.items():
      seconds[name].append(run())
  return seconds


def figure(what, samples, unit):
  print(f"figure  {what:<66} {statistics.median(samples):10.2f} {unit}  "
        f"(reps: {' '.join(f'{s:.2f}' for s in samples)})", flush=True)
  return statistics.median(samples)


def ratio(what, value, goal=None):
  verdict = "" if goal is None else f"  [goal >= {goal:.2f}: {'met' if value >= goal else 'MISSED'}]"
  print(f"ratio   {what:<66} {value:10.2f}x{verdict}", flush=True)

def imagenet_like_jpegs(count, seed=0, noise=0.0, quality=90):
  """`count` ImageNet-like JPEGs (about 500x375, 3 in 4 landscape, 4:2:0) cropped from skimage's
  photos, as [(bytes, label)]; the label is the photo. Gaussian pixel noise of `noise` levels adds
  the fine detail of real photos (and their file sizes) to the smooth upscaled crops."""
  import io
  import numpy as np
  import skimage.data
  from PIL import Image
  photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
  rng = np.random.default_rng(seed)
  made = []
  for i in range(count):
    label = i % len(photos)
    photo = photos[label]
    width, height = int(rng.integers(450, 551)), int(rng.integers(340, 411))
    if rng.random() < 0.25:
      width, height = height, width
    scale = min(photo.width / width, photo.height / height) * rng.uniform(0.6, 1.0)
    w, h = round(width * scale), round(height * scale)
    x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
    image = photo.crop((x, y, x + w, y + h)).resize((width, height), Image.BILINEAR)
    if noise:
      pixels = np.asarray(image, np.float32) + rng.normal(0, noise, (height, width, 3))
      image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=quality)
    made.append((jpeg.getvalue(), label))
  return made


def timed_batches(dataset, count, clock=time.perf_counter):
  """run() -> seconds (of `clock`) for `count` batches of a fresh iterator, after SKIP_BATCHES
  untimed ones; the iterator (and its background work) ends with the repetition."""
  def run():
    batches = iter(dataset)
    for _ in range(SKIP_BATCHES):
      next(batches)
    start = clock()
    for _ in range(count):
      next(batches)
    return clock() - start
  return run
