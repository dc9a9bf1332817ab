"""The learning-rate formula of the NF5488 submission, on its own so that the plan (`--dry_run`) needs no Keras:
optim.WarmupPolyDecay runs it in the optimizer with keras.ops, the plan and the progress line with NumPy."""
import numpy as np

from tf_rn50.flags import FLAGS


def warmup_poly_decay(it, base_lr, warmup_steps, total_steps, end_lr, power, xp=np):
  """lr at 1-based steps `it`: base*it/W up to W, then end + (base-end)*(1-(it-W)/(T-W))^p."""
  warm = base_lr * it / max(warmup_steps, 1)
  progress = xp.clip((it - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
  decay = end_lr + (base_lr - end_lr) * (1.0 - progress) ** power
  return xp.where(it <= warmup_steps, warm, decay)


def run_arguments(plan):
  """warmup_poly_decay's arguments for a run: the flags' rates and power, the plan's step counts."""
  return dict(base_lr=FLAGS.base_lr, warmup_steps=plan.warmup_steps, total_steps=plan.total_steps,
              end_lr=FLAGS.end_lr, power=FLAGS.lr_decay_power)
