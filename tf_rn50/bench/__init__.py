"""Benchmarks: our hot paths against what a user would write instead, side by side, as ratios.

  python -m tf_rn50.bench train [--quick]     # our train step vs keras.applications.ResNet50 + fit
  python -m tf_rn50.bench input [--quick]     # DALI vs tf.data train pipelines vs decode-only
  python -m tf_rn50.bench feed [--quick]      # samples/s each input path hands DALI, per rank on one core
  python -m tf_rn50.bench scaling [--quick]   # horovodrun -np 1 vs -np 2; gradient allreduce
  python -m tf_rn50.bench loop [--quick]      # host time train.fit adds per step; its device-to-host reads
  python -m tf_rn50.bench infer [--quick]     # the exported model vs keras.applications.ResNet50, inference

Contenders run in turn (A, B, C, A, B, C, ...) after one warm-up each, so they share the machine's
load; a figure is the median of the repetitions. Output lines: "machine", "load", then
"figure <what> <median> <unit> (reps: ...)" and "ratio <what> <value>x [goal ...]".
docs/benchmarks.md holds the figures of this machine.

One module per benchmark (its run(args)); common.py holds what they share; __main__.py the command line.
"""
