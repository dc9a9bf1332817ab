#!/usr/bin/env bash
# The README's first command: sets up when needed, makes the bundled demo data when missing, then
# runs the MLPerf job on it as the benchmark runs: 2 Horovod ranks, DALI on RecordIO, the NF5488
# schedule shrunk (flags/demo_cpu.cfg), through scripts/run_and_time.sh, and summarizes the run.
#   scripts/demo.sh                 # about 4 minutes on 2 CPU cores after setup
#   NPROC=1 scripts/demo.sh         # one rank
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DATA=data/demo
if [ ! -f "$DATA/recordio/val.idx" ]; then
  .venv/bin/python scripts/make_demo_data.py --out "$DATA"
  .venv/bin/python scripts/verify_dataset.py "$DATA/recordio"
fi
FLAGFILE=flags/demo_cpu.cfg NPROC=${NPROC:-2} DATADIR=$DATA/recordio scripts/run_and_time.sh
.venv/bin/python scripts/summarize.py results/demo_cpu --plot results/demo_cpu/accuracy.png
echo "TensorBoard: .venv/bin/tensorboard --logdir results/demo_cpu   (plot: results/demo_cpu/accuracy.png)"
