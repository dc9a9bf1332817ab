"""One Horovod rank of tests/test_distributed.py's equivalence check: a fixed batch of 8 split
evenly over the ranks, two steps of train.make_train_step with LARS, weights saved by rank 0.

BatchNorm statistics are per rank by design (the seed's span of 408), so a model with BN is not
expected to match across rank counts; this model has none, and tests the gradient averaging."""
import sys

import horovod.tensorflow as hvd
import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import optim, train

hvd.init()
keras.utils.set_random_seed(0)
net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False),
                        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
opt = optim.LARS(optim.WarmupPolyDecay(1.0, 1, 4, 1e-4, 2.0), kernel_weight_decay=1e-3, eta=0.01)
opt.build(net.trainable_variables)
train.broadcast_state(net, opt)
step = train.make_train_step(net, opt, num_classes=5, label_smoothing=0.1, xla=False,
                             fp16_allreduce=sys.argv[2] == "fp16")
rng = np.random.default_rng(1)
images, labels = rng.normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8, dtype=np.int32) % 5
share = 8 // hvd.size()
mine = slice(hvd.rank() * share, (hvd.rank() + 1) * share)
for _ in range(2):
  step(tf.constant(images[mine]), tf.constant(labels[mine]))
if hvd.rank() == 0:
  np.savez(sys.argv[1], *[v.numpy() for v in net.trainable_variables])
