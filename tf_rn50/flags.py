"""Every flag of tf_rn50, its validation, and the plan the flags turn into.

The plan is the whole shape of a run before any data is touched: global batch, steps per
epoch, warmup and total steps, and the epochs that are evaluated. `--dry_run=N` prints it for
N ranks, with the learning rate at its landmark steps, as one JSON line.
"""
import dataclasses
import math
import os
import sys

from absl import flags

# --- input
flags.DEFINE_string("data_dir", None, "Dataset folder: train.rec/.idx + val.rec/.idx (recordio) "
                    "or train-*/validation-* TFRecord shards with DALI index files (tfrecord).")
flags.DEFINE_enum("data_format", "recordio", ["recordio", "tfrecord"], "Layout of --data_dir.")
flags.DEFINE_enum("data_backend", "dali", ["dali", "tfdata", "synthetic"], "Input pipeline.")
flags.DEFINE_enum("data_sampler", "exact", ["exact", "dali"], "Who picks each rank's examples, order and crops: "
                  "exact: tf_rn50.data.sampling (exact resume, the same batches as --data_backend=tfdata); "
                  "dali: DALI's C++ readers, shuffling within a buffer (GPU speed; --data_backend=dali only). "
                  "See docs/input.md.")
flags.DEFINE_integer("train_examples", 0, "Training set size; 0 = count it from --data_dir. "
                     "When both are given they must agree.", lower_bound=0)
flags.DEFINE_integer("eval_examples", 0, "Validation set size; 0 = count it from --data_dir.",
                     lower_bound=0)
flags.DEFINE_integer("num_classes", 1000, "Number of classes.", lower_bound=2)
flags.DEFINE_integer("image_size", 224, "Square training/eval image size.", lower_bound=32)
flags.DEFINE_integer("batch_size", 408, "Training batch per rank.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 0, "Eval batch per rank; 0 = --batch_size.", lower_bound=0)
flags.DEFINE_integer("dali_threads", 4, "DALI CPU threads per rank.", lower_bound=1)
flags.DEFINE_float("dali_hw_decoder_load", 0.65, "GPUs with a hardware JPEG decoder (A100, H100): the share of "
                   "the JPEGs it decodes, the rest go to nvJPEG on the GPU and CPU threads (DALI's default 0.65; "
                   "tune per system).", lower_bound=0.0, upper_bound=1.0)

# --- model and precision
flags.DEFINE_enum("dtype", "fp16", ["fp16", "bf16", "fp32"],
                  "fp16: mixed_float16 with dynamic loss scaling; bf16: mixed_bfloat16; fp32.")
flags.DEFINE_bool("xla", True, "Compile forward/backward and the optimizer update with XLA.")
flags.DEFINE_float("bn_momentum", 0.9, "BatchNorm moving-average momentum.")
flags.DEFINE_float("bn_epsilon", 1e-5, "BatchNorm epsilon.")
flags.DEFINE_bool("zero_init_residual", False, "Start the last BN gamma of each block at zero.")

# --- optimizer and schedule
flags.DEFINE_integer("train_epochs", 37, "Scheduled epochs.", lower_bound=1)
flags.DEFINE_float("base_lr", 10.5, "Peak learning rate, reached at the end of warmup.")
flags.DEFINE_float("warmup_epochs", 2.0, "Linear warmup length in epochs.", lower_bound=0.0)
flags.DEFINE_float("end_lr", 1e-4, "Learning rate at the last step.")
flags.DEFINE_float("lr_decay_power", 2.0, "Power of the polynomial decay after warmup.")
flags.DEFINE_float("momentum", 0.9, "LARS momentum.")
flags.DEFINE_float("weight_decay", 5e-5, "Weight decay on conv and dense kernels.")
flags.DEFINE_float("lars_eta", 0.001, "LARS trust coefficient.")
flags.DEFINE_float("lars_epsilon", 0.0, "LARS epsilon in the trust-ratio denominator.")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy.")
flags.DEFINE_bool("fp16_allreduce", False, "Compress gradients to float16 for the allreduce.")

# --- evaluation
flags.DEFINE_integer("eval_period", 4, "Evaluate every this many epochs ...", lower_bound=1)
flags.DEFINE_integer("eval_offset", 2, "... at 0-based epochs e with e % eval_period == eval_offset.",
                     lower_bound=0)
flags.DEFINE_float("target_accuracy", 0.759, "Stop with success at this top-1 accuracy.")

# --- run
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train: the MLPerf run. eval: restore a checkpoint "
                  "(--checkpoint_path, else the newest in --output_dir) and evaluate the validation set once.")
flags.DEFINE_string("checkpoint_path", None, "--mode=eval and tf_rn50.export: restore this checkpoint (one "
                    "checkpoint, or a folder: its newest) instead of the newest in --output_dir/checkpoints.")
flags.DEFINE_integer("seed", 1, "Random seed (weights, data order, augmentation).")
flags.DEFINE_string("output_dir", "runs/default", "Run folder: mlperf.log, tensorboard/, checkpoints/.")
flags.DEFINE_bool("resume", False, "Continue from the last checkpoint in --output_dir.")
flags.DEFINE_enum("checkpoint", "block", ["block", "none"], "block: rank 0 saves the run's state after each "
                  "block (evaluation), written off the step loop; none: never (timed MLPerf runs).")
flags.DEFINE_integer("keep_checkpoints", 2, "Checkpoints kept in --output_dir/checkpoints, newest first.",
                     lower_bound=1)
flags.DEFINE_integer("log_every", 20, "Read the loss back from the device and print a progress line every "
                     "this many steps (and before each evaluation); the loop never waits for a step otherwise.",
                     lower_bound=1)
flags.DEFINE_integer("max_nonfinite_steps", 10, "Stop after this many consecutive steps with a "
                     "non-finite loss (noticed at the next read: up to --log_every - 1 steps later).", lower_bound=1)
flags.DEFINE_integer("dry_run", 0, "Print the plan for this many ranks as JSON and exit.", lower_bound=0)
flags.DEFINE_integer("gpus_per_host", 8, "GPUs per host, for --dry_run's placement (a run uses the GPUs it sees).",
                     lower_bound=0)
flags.DEFINE_integer("cores_per_host", 0, "Physical CPU cores per host, for --dry_run's placement; 0 = this "
                     "host's.", lower_bound=0)
flags.DEFINE_string("submission_platform", "1xCPU", "MLPerf submission_platform, e.g. 1xNF5488.")
flags.DEFINE_string("submission_org", "tf_rn50", "MLPerf submission_org.")
flags.DEFINE_bool("cache_clear", False, "Whether the harness dropped the page cache before this run "
                  "(scripts/run_and_time.sh sets it); logged as MLPerf cache_clear.")

FLAGS = flags.FLAGS
RUN_FLAGFILE = "flags.cfg"   # in --output_dir: the flags a run trained with (write_run_flagfile)

flags.register_validator("eval_offset", lambda v: v < FLAGS.eval_period,
                         "--eval_offset must be smaller than --eval_period")
flags.register_validator("target_accuracy", lambda v: 0.0 < v <= 1.0,
                         "--target_accuracy must be in (0, 1]")
flags.register_validator("label_smoothing", lambda v: 0.0 <= v < 1.0,
                         "--label_smoothing must be in [0, 1)")
flags.register_validator("momentum", lambda v: 0.0 <= v < 1.0, "--momentum must be in [0, 1)")
flags.register_validator("end_lr", lambda v: 0.0 <= v <= FLAGS.base_lr,
                         "--end_lr must be in [0, --base_lr]")
flags.register_validator("warmup_epochs", lambda v: v < FLAGS.train_epochs,
                         "--warmup_epochs must be smaller than --train_epochs")
flags.register_validator("data_dir", lambda v: v or FLAGS.data_backend == "synthetic" or FLAGS.dry_run,
                         "--data_dir is required unless --data_backend=synthetic or --dry_run")

flags.register_multi_flags_validator(
    ["data_sampler", "data_backend"], lambda f: f["data_sampler"] == "exact" or f["data_backend"] != "tfdata",
    "--data_sampler=dali reads with DALI's readers and needs --data_backend=dali "
    "(--data_backend=tfdata is the exact sampler's tf.data twin: use --data_sampler=exact)")


@flags.multi_flags_validator(["data_backend", "train_examples", "eval_examples", "dry_run"],
                             "--data_backend=synthetic and --dry_run need --train_examples and "
                             "--eval_examples (there is no data to count)")
def _counts_given_without_data(f):
  needs_counts = f["data_backend"] == "synthetic" or f["dry_run"]
  return not needs_counts or (f["train_examples"] > 0 and f["eval_examples"] > 0)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a run will do, derived from the flags and the rank count alone."""
  num_ranks: int
  batch_size: int            # per rank
  train_examples: int
  eval_examples: int
  train_epochs: int
  warmup_epochs: float
  eval_period: int
  eval_offset: int

  @property
  def global_batch_size(self):
    return self.batch_size * self.num_ranks

  @property
  def steps_per_epoch(self):
    # Each rank owns ceil(N / ranks) examples of the epoch's permutation (the short shards are
    # padded), so no example is left out. For ImageNet on 8 ranks this equals the seed's
    # ceil(floor(N / 8) / 408) = 393.
    return math.ceil(math.ceil(self.train_examples / self.num_ranks) / self.batch_size)

  @property
  def warmup_steps(self):
    return round(self.warmup_epochs * self.steps_per_epoch)

  @property
  def total_steps(self):
    return self.train_epochs * self.steps_per_epoch

  @property
  def eval_epochs(self):
    """1-based epochs after which the model is evaluated."""
    return [e + 1 for e in range(self.train_epochs) if e % self.eval_period == self.eval_offset]

  def ends_block(self, epoch):
    """Whether 0-based `epoch` closes an MLPerf block: it is evaluated, or it is the last."""
    return epoch + 1 in self.eval_epochs or epoch + 1 == self.train_epochs

  def summary(self):
    return {
        "num_ranks": self.num_ranks,
        "global_batch_size": self.global_batch_size,
        "steps_per_epoch": self.steps_per_epoch,
        "warmup_steps": self.warmup_steps,
        "total_steps": self.total_steps,
        "eval_epochs": self.eval_epochs,
    }


def make_plan(num_ranks, train_examples=None, eval_examples=None):
  """The Plan for `num_ranks` ranks from the parsed flags; example counts default to the flags."""
  train_examples = train_examples or FLAGS.train_examples
  if train_examples // num_ranks < 1:
    raise ValueError(f"--train_examples={train_examples} gives no example to each of {num_ranks} ranks")
  return Plan(num_ranks=num_ranks, batch_size=FLAGS.batch_size,
              train_examples=train_examples, eval_examples=eval_examples or FLAGS.eval_examples,
              train_epochs=FLAGS.train_epochs, warmup_epochs=FLAGS.warmup_epochs,
              eval_period=FLAGS.eval_period, eval_offset=FLAGS.eval_offset)


def write_run_flagfile(output_dir, plan):
  """Writes output_dir/flags.cfg: every flag of this module as the run uses it, with the example counts of
  its plan, so eval and export rebuild the same model and optimizer without the data or the command line."""
  counts = {"train_examples": plan.train_examples, "eval_examples": plan.eval_examples}
  lines = [flag.serialize() if flag.name not in counts else f"--{flag.name}={counts[flag.name]}"
           for flag in FLAGS.get_flags_for_module(sys.modules[__name__])]
  with open(os.path.join(output_dir, RUN_FLAGFILE), "w") as f:
    f.write(f"# The flags of the run in {output_dir}, written by tf_rn50.main at init; read by tf_rn50.export.\n"
            f"# Evaluate it with: python -m tf_rn50.main --flagfile=<this file> --mode=eval\n")
    f.write("".join(f"{line}\n" for line in lines if line))
