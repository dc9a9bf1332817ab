"""The benchmarks' command line (usage: tf_rn50/bench/__init__.py): `python -m tf_rn50.bench <name> [--quick]`."""
import argparse
import importlib
import os

import tf_rn50.bench
from tf_rn50.bench import scaling
from tf_rn50.bench.common import load, machine

BENCHMARKS = ("train", "input", "feed", "scaling", "loop", "infer")   # each the module tf_rn50.bench.<name>, run(args)
WORKERS = {"_train_worker": scaling.train_worker, "_allreduce_worker": scaling.allreduce_worker}


def main():
  parser = argparse.ArgumentParser(prog="python -m tf_rn50.bench", description=tf_rn50.bench.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark", choices=[*BENCHMARKS, *WORKERS],
                      help="The _workers run inside horovodrun, started by `scaling`.")
  parser.add_argument("--quick", action="store_true", help="Tiny sizes, fp32 XLA-off only: a smoke run.")
  parser.add_argument("--batch_size", type=int, default=0, help="train/scaling/infer: images per rank (0: default).")
  parser.add_argument("--image_size", type=int, default=0, help="train/scaling/infer: square size (0: default).")
  parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
  parser.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
  parser.add_argument("--num_classes", type=int, default=1000, help=argparse.SUPPRESS)
  parser.add_argument("--compare_allreduces", action="store_true", help=argparse.SUPPRESS)   # _train_worker, -np 2
  args = parser.parse_args()
  if args.benchmark in WORKERS:
    WORKERS[args.benchmark](args)
    return
  if args.benchmark == "feed":         # per rank on one core: before any thread starts, so all inherit it
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  machine()
  load()
  importlib.import_module(f"tf_rn50.bench.{args.benchmark}").run(args)
  load()


if __name__ == "__main__":
  main()
