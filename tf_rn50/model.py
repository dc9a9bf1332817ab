"""ResNet-50 v1.5 as a Keras 3 functional model, NHWC.

v1.5: in the first block of stages 3, 4 and 5 (the down-sampling ones) the stride 2 sits on the
3x3 conv, not on the first 1x1. `python -m tf_rn50.model [--image_size 224 --num_classes 1000]`
prints the layer table and the trainable parameter count (25,557,032 for 1000 classes).
"""
import keras
import tensorflow as tf
from keras import layers

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))   # (width, blocks, first stride)
POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


class BatchNorm(layers.BatchNormalization):
  """Keras' BatchNormalization with TF's fused kernel for the training pass.

  Keras 3 normalizes with moments and separate element-wise ops; the fused op made our training step
  1.15x faster on a quiet 2-core CPU (docs/benchmarks.md). Same results: moving statistics use the biased batch
  variance as Keras does (the fused op returns the unbiased one); inference is Keras' own code.
  """

  def call(self, inputs, training=None, mask=None):
    if not training:
      return super().call(inputs, training=training)
    outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32"), epsilon=self.epsilon,
        is_training=True)
    count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], "float32")
    variance = unbiased * (count - 1.0) / count
    self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
    self.moving_variance.assign(self.momentum * self.moving_variance + (1.0 - self.momentum) * variance)
    return outputs


def resnet50(num_classes=1000, input_shape=(224, 224, 3), dtype="fp32", bn_momentum=0.9,
             bn_epsilon=1e-5, zero_init_residual=False):
  """The benchmark's ResNet-50 v1.5; `dtype` is fp32, fp16 or bf16 (mixed precision policies).

  The input is expected in the policy's compute dtype; logits are always float32.
  """
  policy = keras.DTypePolicy(POLICIES[dtype])

  def conv(x, filters, kernel, stride, name):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal"),
                         dtype=policy, name=name)(x)

  def bn(x, name, zero_gamma=False):
    return BatchNorm(momentum=bn_momentum, epsilon=bn_epsilon,
                                     gamma_initializer="zeros" if zero_gamma else "ones",
                                     dtype=policy, name=name)(x)

  def relu(x, name):
    return layers.ReLU(dtype=policy, name=name)(x)

  def bottleneck(x, width, stride, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * width:
      shortcut = bn(conv(x, 4 * width, 1, stride, f"{name}_proj_conv"), f"{name}_proj_bn")
    y = relu(bn(conv(x, width, 1, 1, f"{name}_conv1"), f"{name}_bn1"), f"{name}_relu1")
    y = relu(bn(conv(y, width, 3, stride, f"{name}_conv2"), f"{name}_bn2"), f"{name}_relu2")
    y = bn(conv(y, 4 * width, 1, 1, f"{name}_conv3"), f"{name}_bn3", zero_gamma=zero_init_residual)
    y = layers.Add(dtype=policy, name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")

  images = keras.Input(input_shape, dtype=policy.compute_dtype, name="images")
  x = relu(bn(conv(images, 64, 7, 2, "conv1"), "bn1"), "relu1")
  x = layers.MaxPooling2D(3, strides=2, padding="same", dtype=policy, name="pool1")(x)
  for stage, (width, blocks, stride) in enumerate(STAGES, start=2):
    for block in range(1, blocks + 1):
      x = bottleneck(x, width, stride if block == 1 else 1, f"stage{stage}_block{block}")
  x = layers.GlobalAveragePooling2D(dtype=policy, name="avg_pool")(x)
  logits = layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        dtype="float32", name="logits")(x)
  return keras.Model(images, logits, name="resnet50_v1_5")


def main():
  import argparse
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--num_classes", type=int, default=1000)
  args = parser.parse_args()
  model = resnet50(args.num_classes, (args.image_size, args.image_size, 3))
  model.summary(line_length=110)
  print(f"trainable parameters: {sum(v.numpy().size for v in model.trainable_variables):,}")


if __name__ == "__main__":
  main()
