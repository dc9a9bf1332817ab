"""LARS against a NumPy version of REFERENCE.md's formula; the warmup + polynomial schedule."""
import keras
import numpy as np
import tensorflow as tf

from tf_rn50 import optim


def numpy_lars(w, g, v, lr, momentum, wd, eta, eps):
  """REFERENCE.md: v <- m*v + lr*trust*(g + wd*w); w <- w - v for kernels; plain momentum for rank 1."""
  if w.ndim >= 2:
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    trust = eta * w_norm / (g_norm + wd * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
    v = momentum * v + lr * trust * (g + wd * w)
  else:
    v = momentum * v + lr * g
  return w - v, v


class LARSTest(tf.test.TestCase):

  def run_both(self, weights, grads_per_step, lr=0.7, **hparams):
    hparams = {**dict(momentum=0.9, kernel_weight_decay=5e-5, eta=0.001, epsilon=0.0), **hparams}
    variables = [keras.Variable(w) for w in weights]
    opt = optim.LARS(lr, **hparams)
    expected, velocities = [w.copy() for w in weights], [np.zeros_like(w) for w in weights]
    for grads in grads_per_step:
      opt.apply([tf.constant(g) for g in grads], variables)
      for i, g in enumerate(grads):
        expected[i], velocities[i] = numpy_lars(
            expected[i], g, velocities[i], lr, hparams["momentum"], hparams["kernel_weight_decay"],
            hparams["eta"], hparams["epsilon"])
    return [v.numpy() for v in variables], expected

  def test_matches_numpy_on_random_tensors(self):
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 4, 8), (16, 10), (8,), (10,)]        # conv, dense kernels; BN/bias vectors
    weights = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]
    got, expected = self.run_both(weights, grads)
    for g, e in zip(got, expected):
      self.assertAllClose(g, e, rtol=1e-5, atol=1e-6)
    got, expected = self.run_both(weights, grads, epsilon=1e-3, eta=0.02)
    for g, e in zip(got, expected):
      self.assertAllClose(g, e, rtol=1e-5, atol=1e-6)

  def test_zero_norms_fall_back_to_a_trust_of_one(self):
    zero_w = np.zeros((4, 4), np.float32)
    g = np.full((4, 4), 0.5, np.float32)
    got, expected = self.run_both([zero_w], [[g]], lr=0.1)
    self.assertAllClose(got[0], -0.1 * g)          # trust 1, no decay on a zero weight
    self.assertAllClose(got[0], expected[0])
    w = np.ones((4, 4), np.float32)
    got, expected = self.run_both([w], [[np.zeros_like(w)]], lr=0.1)
    self.assertAllClose(got[0], w - 0.1 * 5e-5 * w)  # zero gradient: trust 1, weight decay only
    self.assertAllClose(got[0], expected[0])

  def test_vectors_get_plain_momentum_without_decay_or_trust(self):
    w, g = np.ones(5, np.float32), np.full(5, 2.0, np.float32)
    got, _ = self.run_both([w], [[g], [g]], lr=0.1)
    self.assertAllClose(got[0], w - 0.1 * 2 - (0.9 * 0.2 + 0.2))

  def test_loss_scaled_lars_skips_non_finite_steps(self):
    variable = keras.Variable(np.ones((2, 2), np.float32))
    opt = keras.optimizers.LossScaleOptimizer(optim.LARS(0.1), initial_scale=8.0)
    opt.apply([tf.constant(np.full((2, 2), np.inf, np.float32))], [variable])
    self.assertAllEqual(variable.numpy(), np.ones((2, 2)))
    self.assertEqual(int(opt.inner_optimizer.iterations), 0)
    self.assertEqual(float(opt.dynamic_scale), 4.0)
    opt.apply([tf.constant(np.full((2, 2), 4.0, np.float32))], [variable])   # unscaled: 1.0
    self.assertEqual(int(opt.inner_optimizer.iterations), 1)
    self.assertNotAllClose(variable.numpy(), np.ones((2, 2)))


class ScheduleTest(tf.test.TestCase):
  # NF5488: S = 393 steps per epoch, W = 2S, T = 37S.
  schedule = optim.WarmupPolyDecay(10.5, 786, 14541, 1e-4, 2.0)

  def test_nf5488_landmarks(self):
    self.assertAllClose(self.schedule.at_step(1), 10.5 / 786)
    self.assertAllClose(self.schedule.at_step(786), 10.5)
    self.assertAllClose(self.schedule.at_step(787), 1e-4 + (10.5 - 1e-4) * (1 - 1 / 13755) ** 2)
    self.assertAllClose(self.schedule.at_step(14541), 1e-4)
    self.assertAllClose(self.schedule.at_step(7000), 1e-4 + (10.5 - 1e-4) * (1 - 6214 / 13755) ** 2)

  def test_keras_counts_updates_from_zero(self):
    # The optimizer passes its 0-based count of applied updates; step it = count + 1.
    for step in (1, 786, 787, 14541):
      self.assertAllClose(float(self.schedule(step - 1)), self.schedule.at_step(step))
    lr = optim.LARS(self.schedule)
    variable = keras.Variable(np.ones(3, np.float32))
    lr.apply([tf.ones(3)], [variable])
    self.assertAllClose(variable.numpy(), np.ones(3) - 10.5 / 786)
