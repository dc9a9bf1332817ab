"""python -m tf_rn50.bench train: our train step vs keras.applications.ResNet50 + model.fit."""
import time

from tf_rn50.bench.common import figure, interleaved, ratio


def batches(net, batch_size, image_size, num_classes):
  """The same synthetic tf.data input for every path, in the dtype of the model's input, without
  tf.data's autotuning (one repeated batch: nothing to tune). Deleting an autotuned iterator waits for
  its tuning thread's next round, 10 ms x (2^k - 1) after the iterator started (k = 1, 2, ...; later
  one a minute), and fit() deletes its iterator at its end: each fit repetition ended at such a round
  (1.27, 2.55, 5.11 s, ...), not when its steps did."""
  import tensorflow as tf
  from tf_rn50.data import synthetic
  dtype = {"float32": "fp32", "bfloat16": "bf16"}[net.inputs[0].dtype]
  options = tf.data.Options()
  options.autotune.enabled = False
  return synthetic.train_dataset(batch_size=batch_size, image_size=image_size, dtype=dtype,
                                 num_classes=num_classes, rank=0, seed=0).with_options(options)


def our_step(net, xla, *, batch_size, image_size, steps, num_classes):
  """run() -> seconds for `steps` steps of the engine on `net` (our model): LARS, train.make_train_step,
  one read of the tally at the end as train.fit does every --log_every steps."""
  from tf_rn50 import optim, train
  lars = optim.LARS(optim.WarmupPolyDecay(1.0, 10, 1000, 1e-4, 2))
  lars.build(net.trainable_variables)
  tally = train.Tally(10, lars)
  step = train.make_train_step(net, lars, tally, num_classes=num_classes, label_smoothing=0.1, xla=xla,
                               fp16_allreduce=False)
  data = iter(batches(net, batch_size, image_size, num_classes))

  def run():
    start = time.perf_counter()
    for _ in range(steps):
      step(*next(data))
    tally.read()
    return time.perf_counter() - start
  return run


def keras_fit(net, xla, *, batch_size, image_size, steps, num_classes):
  """run() -> seconds for `steps` steps of net.fit with SGD, as a Keras user would train."""
  import keras
  net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=xla)
  net.optimizer.build(net.trainable_variables)   # as our step's LARS: else fit traces its step twice
  data = batches(net, batch_size, image_size, num_classes)

  def run():
    start = time.perf_counter()
    net.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start
  return run


def run(args):
  import horovod.tensorflow as hvd
  import keras
  from tf_rn50 import model
  hvd.init()   # one rank: the step skips the allreduce, as the engine does on one device
  size = dict(batch_size=args.batch_size or (8 if args.quick else 32),
              image_size=args.image_size or (32 if args.quick else 64),
              steps=2 if args.quick else 3, num_classes=10 if args.quick else 1000)
  reps = 1 if args.quick else 3
  settings = [("fp32", False)] if args.quick else [(p, x) for p in ("fp32", "bf16") for x in (False, True)]
  print(f"train: batch {size['batch_size']}, {size['image_size']}x{size['image_size']}, {size['num_classes']} "
        f"classes, {size['steps']} steps per repetition, {reps} repetitions; synthetic tf.data input", flush=True)
  ours_vs_keras = {}
  for precision, xla in settings:
    keras.utils.clear_session()
    shape = (size["image_size"], size["image_size"], 3)
    ours = model.resnet50(size["num_classes"], shape, dtype=precision)
    keras.mixed_precision.set_global_policy(model.POLICIES[precision])
    theirs = keras.applications.ResNet50(weights=None, input_shape=shape, classes=size["num_classes"],
                                         classifier_activation=None)
    keras.mixed_precision.set_global_policy("float32")
    seconds = interleaved({
        "ours": our_step(model.resnet50(size["num_classes"], shape, dtype=precision), xla, **size),
        "ours_fit": keras_fit(ours, xla, **size),
        "keras": keras_fit(theirs, xla, **size),
    }, reps)
    setting = f"{precision} xla={'on' if xla else 'off'}"
    images = size["batch_size"] * size["steps"]
    rate = {name: figure(f"train {setting}: {label}", [images / s for s in seconds[name]], "img/s")
            for name, label in (("ours", "our step (v1.5, LARS, train.make_train_step)"),
                                ("ours_fit", "our model (v1.5) under model.fit, SGD"),
                                ("keras", "keras.applications.ResNet50 (v1), model.fit, SGD"))}
    ratio(f"train {setting}: our step / keras.applications fit", rate["ours"] / rate["keras"], goal=1.0)
    ratio(f"train {setting}: loop: our step / our model under fit", rate["ours"] / rate["ours_fit"])
    ratio(f"train {setting}: model: our model / keras.applications, both fit", rate["ours_fit"] / rate["keras"])
    ours_vs_keras[setting] = (rate["keras"], rate["ours"] / rate["keras"])
  best = max(ours_vs_keras, key=lambda s: ours_vs_keras[s][0])
  ratio(f"train at the Keras path's best setting ({best}): ours / keras", ours_vs_keras[best][1], goal=1.3)
