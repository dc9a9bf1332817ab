#!/usr/bin/env python3
"""Summarize MLPerf Training result logs: time to train, converged epoch, accuracy, score.

  scripts/summarize.py results/nf5488 ../shared/reference           # table
  scripts/summarize.py results/nf5488 --plot curves.png             # + eval curves
  scripts/summarize.py results/nf5488/result_1.txt --json           # machine-readable

A PATH is a log file or a folder; a folder contributes every *.txt / *.log file directly in it
that holds a `run_start` event. One file is one run. Only `:::MLLOG {json}` lines are read, wherever
they sit in a line (horovodrun prefixes them with `[0]<stdout>:`); every other line is ignored.
Several ranks may print the same event: the first `run_start` and the first `run_stop` count (as in
mlperf_logging's result_summarizer), and the first `eval_accuracy` of each epoch.

Per run:
  minutes     (run_stop - run_start) time_ms / 60000, the MLPerf time to train
  status      run_stop's status (success | aborted), or "unfinished" without a run_stop
  epoch       epoch_num of the last eval_accuracy, when the status is success
  accuracy    the last eval_accuracy
  img/s       train_samples * epochs trained / (run_stop - run_start) seconds, where epochs trained
              is the highest epoch_stop epoch_num (else the last eval epoch). End to end: it
              includes evaluation and pipeline start-up, so it is below the per-step speed.
Per folder, the MLPerf score (resnet: 5 runs): see `mlperf_score`.
"""
import in_venv  # noqa: F401  (first: reruns this tool under the clone's .venv python)

import argparse
import json
import statistics
import sys
from pathlib import Path

TARGET_ACCURACY = 0.759
RUNS_PER_RESULT = 5  # MLPerf Training rules: resnet's result is 5 runs, olympic-averaged
SEED_LOG = Path(__file__).resolve().parents[1].parent / "shared/reference/inspur_nf5488_result_1.txt"
# The seed's run 1 eval accuracy by epoch (REFERENCE.md §1), used when SEED_LOG is not at hand.
SEED_CURVE = [(3, 0.348), (7, 0.446), (11, 0.541), (15, 0.586), (19, 0.652), (23, 0.692),
              (27, 0.727), (31, 0.751), (35, 0.761)]
TOKEN = ":::MLLOG"


def read_events(path):
  """The :::MLLOG events of a file, in file order."""
  decoder = json.JSONDecoder()
  events = []
  with open(path, errors="replace") as f:
    for line in f:
      at = line.find(TOKEN)
      if at < 0:
        continue
      try:  # raw_decode: text after the JSON (interleaved output) is not an error
        event, _ = decoder.raw_decode(line[at + len(TOKEN):].lstrip())
      except json.JSONDecodeError:
        continue  # a line cut short by a crash or by another process's output
      if isinstance(event, dict) and "key" in event:
        events.append(event)
  return events


def summarize_run(path):
  """One run's figures (see the module doc), or None if the file has no run_start."""
  events = read_events(path)
  first = {}
  curve = {}
  epochs_trained = 0
  for e in events:
    first.setdefault(e["key"], e)
    meta = e.get("metadata") or {}
    if e["key"] == "eval_accuracy" and "epoch_num" in meta:
      curve.setdefault(meta["epoch_num"], e["value"])
    if e["key"] == "epoch_stop" and "epoch_num" in meta:
      epochs_trained = max(epochs_trained, meta["epoch_num"])
  if "run_start" not in first:
    return None
  curve = sorted(curve.items())
  epochs_trained = epochs_trained or (curve[-1][0] if curve else 0)
  stop = first.get("run_stop")
  status = (stop.get("metadata") or {}).get("status", "unknown") if stop else "unfinished"
  ms = stop["time_ms"] - first["run_start"]["time_ms"] if stop else None
  samples = first.get("train_samples", {}).get("value")
  return {
      "path": str(path),
      "status": status,
      "time_to_train_ms": ms,
      "minutes": ms / 60000 if ms is not None else None,
      "converged_epoch": curve[-1][0] if status == "success" and curve else None,
      "accuracy": curve[-1][1] if curve else None,
      "epochs_trained": epochs_trained,
      "train_samples": samples,
      "images_per_sec": samples * epochs_trained / (ms / 1000) if samples and ms else None,
      "curve": curve,
  }


def mlperf_score(runs):
  """(minutes or None, how it was computed) for one folder's runs.

  The rules for resnet: 5 runs; drop the fastest and the slowest, the score is the mean of the other
  3. A run that did not succeed counts as the dropped slowest one, and more than one such run voids
  the result (mlperf_logging's result_summarizer does the same). More than 5 runs: still drop one
  of each end. Fewer than 5: not a full set; the plain mean of the successful runs is shown.
  """
  times = sorted(r["minutes"] for r in runs if r["status"] == "success")
  failed = len(runs) - len(times)
  if len(runs) < RUNS_PER_RESULT:
    mean = statistics.mean(times) if times else None
    return mean, f"not a full set ({len(runs)} of {RUNS_PER_RESULT} runs): plain mean of {len(times)} successful"
  if failed > 1:
    return None, f"no score: {failed} of {len(runs)} runs did not succeed (at most 1 may)"
  kept = times[1:len(times) - (1 - failed)]
  dropped = "fastest and the failed run" if failed else "fastest and slowest"
  return statistics.mean(kept), f"mean of {len(kept)} of {len(runs)} runs ({dropped} dropped)"


def collect(paths):
  """{folder: [run, ...]} over the given files and folders, in name order."""
  folders = {}
  for p in map(Path, paths):
    files = sorted(f for f in p.iterdir() if f.suffix in (".txt", ".log") and f.is_file()) \
        if p.is_dir() else [p]
    for f in files:
      run = summarize_run(f)
      if run:
        folders.setdefault(str(f.parent), []).append(run)
  return folders


def seed_curve():
  run = summarize_run(SEED_LOG) if SEED_LOG.is_file() else None
  return run["curve"] if run else SEED_CURVE


def plot(folders, out):
  import matplotlib
  matplotlib.use("Agg")  # files only; there is no display
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
  epochs, accs = zip(*seed_curve())
  # The seed underneath, wide and grey, so runs drawn on top of it stay visible.
  ax.plot(epochs, accs, color="0.6", lw=4, alpha=0.6, marker="s", ms=7, zorder=1,
          label="seed: Inspur NF5488 run 1 (MXNet, 8×A100, batch 3264)")
  for runs in folders.values():
    for r in runs:
      if r["curve"]:
        epochs, accs = zip(*r["curve"])
        ax.plot(epochs, accs, marker="o", ms=4, lw=1.2, ls="-" if r["status"] == "success" else "--",
                label=f"{Path(r['path']).parent.name}/{Path(r['path']).name} ({r['status']})")
  ax.axhline(TARGET_ACCURACY, color="tab:red", lw=1, ls=":")
  ax.annotate(f"target {TARGET_ACCURACY}", (0.01, TARGET_ACCURACY), xycoords=("axes fraction", "data"),
              xytext=(0, 4), textcoords="offset points", color="tab:red", fontsize=9)
  ax.set(xlabel="epoch", ylabel="top-1 eval accuracy", ylim=(0, 1), xlim=(0, None),
         title="ResNet-50 eval accuracy by epoch")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(out)
  plt.close(fig)


def fmt(value, spec):
  return "-" if value is None else format(value, spec)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", metavar="PATH", help="result log files or folders of them")
  parser.add_argument("--plot", metavar="FILE.png", help="draw eval accuracy vs epoch to this file")
  parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
  args = parser.parse_args(argv)
  missing = [p for p in args.paths if not Path(p).exists()]
  if missing:
    parser.error(f"no such file or folder: {' '.join(missing)}")

  folders = collect(args.paths)
  if not folders:
    print(f"no MLPerf run (a log with run_start) in {' '.join(args.paths)}", file=sys.stderr)
    return 1
  scores = {folder: mlperf_score(runs) for folder, runs in folders.items()}
  if args.plot:
    plot(folders, args.plot)

  if args.json:
    print(json.dumps({"runs": [r for runs in folders.values() for r in runs],
                      "folders": [{"folder": f, "runs": len(folders[f]), "score_minutes": s, "note": n}
                                  for f, (s, n) in scores.items()]}, indent=1))
    return 0
  for folder, runs in folders.items():
    print(f"{folder}")
    print(f"  {'status':<11}{'minutes':>9}{'epoch':>7}{'accuracy':>10}{'img/s':>10}  run")
    for r in runs:
      print(f"  {r['status']:<11}{fmt(r['minutes'], '.2f'):>9}{fmt(r['converged_epoch'], 'd'):>7}"
            f"{fmt(r['accuracy'], '.5f'):>10}{fmt(r['images_per_sec'], ',.0f'):>10}  {Path(r['path']).name}")
    score, note = scores[folder]
    print(f"  MLPerf score: {'none' if score is None else f'{score:.2f} min'}, {note}\n")
  if args.plot:
    print(f"plot: {args.plot}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
