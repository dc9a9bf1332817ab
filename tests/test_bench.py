"""tf_rn50.bench: each benchmark's --quick run prints the machine, its figures and its ratios.

Nothing about speed is asserted: the figures only have to be there and be positive numbers.
The selected benchmarks' runs start with this module, two at a time, longest first: most of a --quick
run is one Python thread tracing TF graphs, so two share the 2 cores. Each test waits for its own
run, so pytest's --durations shows a test's wait, not its run's length.
"""
import concurrent.futures
import math
import os
import re
import subprocess
import sys
import unittest

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIGURE = re.compile(r"^figure  (.+?) +(\S+) (img/s/core|img/s|img/cpu-s|samples/s|ms|us/step|reads/1000 steps)"
                    r"  \(reps: ([^)]*)\)$")
RATIO = re.compile(r"^ratio   (.+?) +(\S+)x(  \[goal >= \S+: (met|MISSED)\])?$")
LONGEST_FIRST = ("scaling", "train", "infer", "input", "feed", "loop")
RUNS = {}   # benchmark: the future of its --quick run's subprocess.CompletedProcess


def run_quick(benchmark):
  return subprocess.run([sys.executable, "-m", "tf_rn50.bench", benchmark, "--quick"], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", autouse=True)
def quick_runs(request):
  selected = {item.name for item in request.session.items if item.path == request.path}
  pool = concurrent.futures.ThreadPoolExecutor(2)
  RUNS.update({name: pool.submit(run_quick, name) for name in LONGEST_FIRST if f"test_{name}" in selected})
  yield
  pool.shutdown(cancel_futures=True)


def quick(benchmark):
  """(figures, ratios) of `python -m tf_rn50.bench <benchmark> --quick` as {what: value}."""
  done = RUNS[benchmark].result()
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  lines = done.stdout.splitlines()
  assert any(re.match(r"machine: .+, \d+ cores .*tensorflow 2\.\S+, .*horovod \S+, dali \S+$", l) for l in lines), lines
  assert sum(l.startswith("load: ") for l in lines) == 2, lines
  figures, ratios = {}, {}
  for line in lines:
    if line.startswith("figure"):
      found = FIGURE.match(line)
      assert found, line
      reps = [float(x) for x in found.group(4).split()]
      assert reps and all(math.isfinite(x) and x > 0 for x in reps), line
      figures[found.group(1)] = float(found.group(2))
    elif line.startswith("ratio"):
      found = RATIO.match(line)
      assert found, line
      ratios[found.group(1)] = float(found.group(2))
  for value in (*figures.values(), *ratios.values()):
    assert math.isfinite(value) and value > 0, (figures, ratios)
  return figures, ratios


class QuickBenchmarksTest(unittest.TestCase):

  def check(self, benchmark, num_figures, num_ratios, goals):
    figures, ratios = quick(benchmark)
    self.assertEqual(len(figures), num_figures, figures)
    self.assertEqual(len(ratios), num_ratios, ratios)
    for goal in goals:
      self.assertTrue(any(goal in what for what in ratios), (goal, ratios))

  def test_train(self):
    # ours, ours under fit, keras.applications: three figures, three ratios and the best-setting one.
    self.check("train", 3, 4, ["our step / keras.applications fit", "best setting"])

  def test_input(self):
    self.check("input", 6, 6, ["DALI train / DALI whole-image decode-only", "tf.data train / DALI train"])

  def test_feed(self):
    # 2 samplers x train/eval x 2 formats, the exact sampler alone, 4 full train pipelines.
    self.check("feed", 13, 3, ["dali sampler, train, recordio (flags/nf5488.cfg) / 12,000 samples/s",
                               "exact sampler, train, recordio / 12,000 samples/s"])

  def test_scaling(self):
    # -np 1, -np 2, the -np 2 step and its allreduce; fused/unfused x fp32/fp16 allreduce (runtime fusion on
    # only, in --quick).
    self.check("scaling", 8, 5, ["weak-scaling efficiency", "unfused / fused", "allreduce share"])

  def test_loop(self):
    # fit, bare loop, the host time fit adds, the reads; fit / bare and the goal ratios of both.
    figures, ratios = quick("loop")
    self.assertEqual((len(figures), len(ratios)), (4, 3), (figures, ratios))
    self.assertEqual(figures["loop: blocking device-to-host reads of train.fit"], 50)   # 1000 / --log_every=20
    self.assertTrue(any("goal (100 us/step)" in what for what in ratios), ratios)

  def test_infer(self):
    # model.keras, keras.applications, the SavedModel on pixels and on JPEGs; per second and per CPU-second.
    self.check("infer", 8, 6, ["(img/s): exported model.keras / keras.applications.ResNet50",
                               "(img/cpu-s): exported model.keras / keras.applications.ResNet50"])
