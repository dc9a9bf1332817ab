"""horovodrun without its start-up check: `python -m tf_rn50.horovodrun <horovodrun's arguments>`.

Before it starts a rank, `horovodrun --gloo` checks that Horovod was built with Gloo by importing
horovod.tensorflow, and so TensorFlow, in a forked child (horovod 0.28.1, horovod/common/util.py): about
4 s of one core at every launch, the whole start of a one-rank demo's launcher. scripts/setup.sh checks
the build once, when it installs Horovod (`horovodrun --check-build`), so scripts/run_and_time.sh and the
tests launch through this instead. The rest is horovodrun's own code; without Gloo, hvd.init() fails.
"""
import sys

from horovod.runner import launch


def main():
  launch.gloo_built = lambda verbose=False: True   # the check run_controller makes before gloo_run
  return launch.run_commandline()


if __name__ == "__main__":
  sys.exit(main())
