"""ResNet-50 v1.5: parameter count, stride placement, precisions, initialisation."""
import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import model


class ResNet50Test(tf.test.TestCase):

  def test_parameter_counts_match_the_benchmark(self):
    net = model.resnet50()
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
    moving = sum(int(np.prod(v.shape)) for v in net.non_trainable_variables)
    self.assertEqual(trainable, 25_557_032)
    self.assertEqual(moving, 53_120)
    self.assertEqual(net.output_shape, (None, 1000))

  def test_downsampling_stride_sits_on_the_3x3_conv(self):
    net = model.resnet50(10, (64, 64, 3))
    for stage in (3, 4, 5):
      block = f"stage{stage}_block1"
      self.assertEqual(net.get_layer(f"{block}_conv1").strides, (1, 1))
      self.assertEqual(net.get_layer(f"{block}_conv2").strides, (2, 2))
      self.assertEqual(net.get_layer(f"{block}_conv2").kernel_size, (3, 3))
      self.assertEqual(net.get_layer(f"{block}_proj_conv").strides, (2, 2))
      self.assertEqual(net.get_layer(f"{block}_proj_conv").kernel_size, (1, 1))
    self.assertEqual(net.get_layer("stage2_block1_conv2").strides, (1, 1))
    self.assertEqual(net.get_layer("conv1").strides, (2, 2))
    # 64 -> conv1 32 -> pool 16 -> stages 16, 8, 4, 2
    self.assertEqual(net.get_layer("stage5_block3_out").output.shape, (None, 2, 2, 2048))
    convs = [l for l in net.layers if isinstance(l, keras.layers.Conv2D)]
    self.assertLen(convs, 53)
    self.assertFalse(any(l.use_bias for l in convs))

  def test_forward_and_backward_under_each_precision(self):
    for dtype, compute in (("fp32", "float32"), ("fp16", "float16"), ("bf16", "bfloat16")):
      with self.subTest(dtype=dtype):
        # 32x32 and 4 images: a CPU has no fast fp16 kernel for filter gradients (~40 M MAC/s, so 64x64 x 8
        # took half a minute); the last stage is 1x1 and its BN takes 4 values (over 2 it overflows fp16).
        net = model.resnet50(10, (32, 32, 3), dtype=dtype)
        self.assertEqual(net.inputs[0].dtype, compute)
        images = tf.cast(tf.random.normal([4, 32, 32, 3]), compute)
        with tf.GradientTape() as tape:
          logits = net(images, training=True)
          loss = tf.reduce_mean(logits ** 2)
        grads = tape.gradient(loss, net.trainable_variables)
        self.assertEqual(logits.shape, (4, 10))
        self.assertEqual(logits.dtype, tf.float32)
        self.assertEqual(net.get_layer("stage3_block1_conv2").compute_dtype, compute)
        self.assertTrue(all(v.dtype == "float32" for v in net.trainable_variables))
        self.assertLen([g for g in grads if g is not None], len(net.trainable_variables))
        self.assertTrue(all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads))

  def test_initialisation_and_batchnorm_settings(self):
    net = model.resnet50(1000, (32, 32, 3), bn_momentum=0.9, bn_epsilon=1e-5, zero_init_residual=True)
    kernel = net.get_layer("logits").kernel.numpy()
    self.assertAllClose(kernel.std(), 0.01, rtol=0.02)
    conv = net.get_layer("stage4_block2_conv2").kernel.numpy()            # fan_in = 3*3*256
    self.assertAllClose(conv.std(), np.sqrt(2.0 / (3 * 3 * 256)), rtol=0.15)
    bn3 = net.get_layer("stage3_block2_bn3")
    self.assertAllEqual(bn3.gamma.numpy(), np.zeros(512))
    self.assertAllEqual(net.get_layer("stage3_block2_bn2").gamma.numpy(), np.ones(128))
    self.assertEqual((bn3.momentum, bn3.epsilon), (0.9, 1e-5))
    default = model.resnet50(10, (32, 32, 3))
    self.assertAllEqual(default.get_layer("stage3_block2_bn3").gamma.numpy(), np.ones(512))


class FusedBatchNormTest(tf.test.TestCase):

  def test_matches_keras_batch_normalization_in_training_and_inference(self):
    images = tf.random.stateless_normal([8, 5, 5, 16], [3, 4]) * 3 + 1
    weights = tf.range(16, dtype=tf.float32)
    results = []
    for layer_class in (keras.layers.BatchNormalization, model.BatchNorm):
      keras.utils.set_random_seed(0)
      bn = layer_class(momentum=0.9, epsilon=1e-5, gamma_initializer="random_normal", beta_initializer="random_normal")
      bn.build(images.shape)
      with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = bn(images, training=True)
        loss = tf.reduce_sum(tf.sin(outputs) * weights)
      grads = tape.gradient(loss, [images, bn.gamma, bn.beta])
      results.append([outputs, *grads, bn.moving_mean, bn.moving_variance, bn(images, training=False)])
    for keras_value, fused_value in zip(*results):
      self.assertAllClose(keras_value, fused_value, rtol=1e-3, atol=1e-4)   # float32 sums in another order
