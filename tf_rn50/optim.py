"""LARS and the warmup + polynomial-decay learning rate of the NF5488 submission.

Momentum variant: the MLPerf TF2 reference's, v <- m*v + lr*trust*(g + wd*w); w <- w - v.
MXNet's "sgdw" LARS also rescales v by lr_t / lr_{t-1}; we leave that out because the TF
reference (and REFERENCE.md's formula) does, and with a per-step schedule the ratio is within
0.2% of 1 after warmup. tests/test_optim.py pins the update to a NumPy version of the formula.
"""
import keras
import numpy as np
from keras import ops

from tf_rn50 import schedule


class WarmupPolyDecay(keras.optimizers.schedules.LearningRateSchedule):
  """lr(it) for the 1-based step it (schedule.warmup_poly_decay).

  Keras calls it with the optimizer's 0-based count of applied updates, so it = that + 1.
  """

  def __init__(self, base_lr, warmup_steps, total_steps, end_lr, power):
    self.base_lr, self.end_lr, self.power = base_lr, end_lr, power
    self.warmup_steps, self.total_steps = warmup_steps, total_steps

  def __call__(self, iterations):
    return self.rate(ops.cast(iterations, "float64") + 1.0, ops)   # float64; LARS casts it

  def at_step(self, step):
    """The rate at 1-based step `step`, as a Python float computed on the host (no device op, no sync:
    for the progress line)."""
    return float(self.rate(np.float64(step), np))

  def rate(self, it, xp):
    return schedule.warmup_poly_decay(it, self.base_lr, self.warmup_steps, self.total_steps, self.end_lr,
                                      self.power, xp)

  def get_config(self):
    return dict(base_lr=self.base_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                end_lr=self.end_lr, power=self.power)


class LARS(keras.optimizers.Optimizer):
  """Layer-wise adaptive rate scaling with momentum.

  Kernels (conv and dense, rank >= 2) get weight decay and the trust ratio
  eta*|w| / (|g| + wd*|w| + eps) (1 when |w| or |g| is 0); BN gamma/beta and biases (rank 1)
  get plain momentum SGD.
  """

  def __init__(self, learning_rate, momentum=0.9, kernel_weight_decay=5e-5, eta=0.001, epsilon=0.0,
               name="lars", **kwargs):
    # Keras' own `weight_decay` is decoupled and applied to every variable, so ours has its own name.
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum, self.kernel_weight_decay = momentum, kernel_weight_decay
    self.eta, self.epsilon = eta, epsilon

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    self.velocities = [self.add_variable_from_reference(v, "velocity") for v in var_list]

  def update_step(self, gradient, variable, learning_rate):
    lr = ops.cast(learning_rate, variable.dtype)
    velocity = self.velocities[self._get_variable_index(variable)]
    if len(variable.shape) >= 2:
      wd = self.kernel_weight_decay
      w_norm, g_norm = ops.norm(ops.reshape(variable, [-1])), ops.norm(ops.reshape(gradient, [-1]))
      trust = ops.where((w_norm > 0) & (g_norm > 0),
                        self.eta * w_norm / (g_norm + wd * w_norm + self.epsilon), 1.0)
      gradient, lr = gradient + wd * variable, lr * trust
    self.assign(velocity, self.momentum * velocity + lr * gradient)
    self.assign_sub(variable, velocity)

  def get_config(self):
    return {**super().get_config(), "momentum": self.momentum, "eta": self.eta, "epsilon": self.epsilon,
            "kernel_weight_decay": self.kernel_weight_decay}
