#!/usr/bin/env bash
# The README's first command: sets up when needed, makes the bundled demo data when missing, then
# runs the MLPerf job on it as the benchmark runs: a Horovod rank, DALI on RecordIO, the NF5488
# schedule shrunk (flags/demo_cpu.cfg), through scripts/run_and_time.sh, and summarizes the run.
# The terminal shows the plan, progress, evaluations, the RESULT line and where everything is; the
# result file keeps every line (the MLPerf log included).
#   scripts/demo.sh                                      # ~1-1.5 minutes on 2 CPU cores after setup
#   NPROC=2 EXTRA_ARGS=--batch_size=16 scripts/demo.sh   # the same global batch on 2 ranks
# Env: NPROC (1), EXTRA_ARGS (more flags), DEMO_DATA (data/demo: made when missing or stale), RESULTS_DIR
# (results/demo_cpu), SEED (the run's seed; unset: a new one), CLEAR_CACHES (0: the demo leaves the page
# cache alone, unlike a timed result; 1 drops it first when run as root).
# Exit status: run_and_time.sh's (0 when the run reached the target).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FLAGFILE=flags/demo_cpu.cfg NPROC=${NPROC:-1} RESULTS_DIR=${RESULTS_DIR:-results/demo_cpu}
# Its 2 MB of data gain nothing from a cold cache; the machine's other programs (and the next TF import,
# ~3 s) would lose theirs.
export CLEAR_CACHES=${CLEAR_CACHES:-0}
DEMO_DATA=${DEMO_DATA:-data/demo}
export DATADIR=$DEMO_DATA/recordio
# TF logs no INFO or WARNING lines from C++; errors still show.
export TF_CPP_MIN_LOG_LEVEL=2

# What a person reads: no MLPerf lines (the result file and mlperf.log hold them) except the seed, as a
# line saying how to repeat the run; no horovodrun prefix on rank 0's output; no INFO lines of Python's
# absl logging (TF's checkpoint saver writes one per save; warnings and errors stay); none of the three
# "Unable to register cuFFT/cuDNN/cuBLAS factory" errors TF's CUDA build logs at every start without a GPU.
readable() {
  sed -u -E 's/^\[0\]<stdout>::::MLLOG .*"key": "seed", "value": ([0-9]+),.*/seed: \1 (SEED=\1 repeats the run)/' |
    { grep --line-buffered -v -E -e ':::MLLOG' -e '^(\[[0-9]+\]<stderr>:)?I[0-9]{4} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] ' \
        -e 'Unable to register cu(FFT|DNN|BLAS) factory: Attempting to register' \
        || [ $? = 1 ]; } | sed -u 's/^\[0\]<stdout>://'   # grep's 1: nothing left to show, not an error
}

# Made when missing, and remade when made by another version of scripts/make_demo_data.py.
made_by=$(sha256sum scripts/make_demo_data.py | cut -d' ' -f1)
if [ ! -f "$DATADIR/val.idx" ] || [ "$(cat "$DEMO_DATA/made_by" 2>/dev/null)" != "$made_by" ]; then
  { scripts/make_demo_data.py --out "$DEMO_DATA" && scripts/verify_dataset.py "$DATADIR"; } 2>&1 | readable
fi

read -ra extra_args <<< "${EXTRA_ARGS:-}"
.venv/bin/python - "$NPROC" --flagfile="$FLAGFILE" "${extra_args[@]}" <<'EOF'
import sys
from tf_rn50 import flags
ranks = int(sys.argv.pop(1))
f = flags.FLAGS
f(sys.argv)
plan = flags.make_plan(ranks)
print(f"plan: ResNet-50 on {f.train_examples} train / {f.eval_examples} val images at {f.image_size}x{f.image_size}, "
      f"{ranks} rank{'s' * (ranks > 1)} x {f.batch_size} images a step, {plan.steps_per_epoch} steps an epoch,\n"
      f"      up to {f.train_epochs} epochs, evaluated after epochs {', '.join(map(str, plan.eval_epochs))}; "
      f"it stops at the first top-1 >= {f.target_accuracy}", flush=True)
EOF

set +e
scripts/run_and_time.sh | readable
status=${PIPESTATUS[0]}
set -e

result=$(find "$RESULTS_DIR" -maxdepth 1 -name 'result_*.txt' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1)
result=${result#* }   # the newest
[ -n "$result" ] || exit "$status"
run_dir=$RESULTS_DIR/run_${result##*_}; run_dir=${run_dir%.txt}
# Repeated demos keep their logs (~40 KB a run) but only the newest run's checkpoints (~200 MB each).
for old in "$RESULTS_DIR"/run_*/checkpoints; do
  [ "$old" = "$run_dir/checkpoints" ] || rm -rf "$old"
done
echo
[ "$status" = 0 ] || echo "the run failed (exit status $status): its errors are above, every line is in $result"
scripts/summarize.py "$result" --plot "$RESULTS_DIR/accuracy.png" || true
echo "every line:  $result    MLPerf log: $run_dir/mlperf.log"
echo "TensorBoard: .venv/bin/tensorboard --logdir $run_dir/tensorboard"
echo "all demo runs so far: scripts/summarize.py $RESULTS_DIR"
if [ "$status" = 0 ]; then   # after training: the model as files to serve, naming two photos it never trained on
  echo
  .venv/bin/python -m tf_rn50.export --output_dir="$run_dir" --out="$RESULTS_DIR/model" 2>&1 | readable
  .venv/bin/python -m tf_rn50.classify "$RESULTS_DIR/model" "$DEMO_DATA/images/val/chelsea/chelsea_0000.JPEG" \
    "$DEMO_DATA/images/val/coffee/coffee_0000.JPEG" 2>&1 | readable
fi
exit "$status"
