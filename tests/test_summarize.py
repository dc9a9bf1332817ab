"""scripts/summarize.py on the seed's real log and on small logs written here."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts/summarize.py"
sys.path.insert(0, str(REPO / "scripts"))
import summarize  # noqa: E402  (scripts/ is not a package)


def mllog(key, time_ms, value=None, **metadata):
  return ":::MLLOG " + json.dumps({"namespace": "", "time_ms": time_ms, "event_type": "POINT_IN_TIME",
                                   "key": key, "value": value, "metadata": metadata})


def write_run(path, minutes, accs, status="success", samples=1000, ranks=1):
  """A small log: run_start at t=0 s, one eval every 4 epochs (3, 7, ...), run_stop after `minutes`.

  `ranks` > 1 repeats every line with horovodrun's rank prefix, as several ranks would print it;
  progress lines and a cut-off line are mixed in. status=None leaves out run_stop (a crash).
  """
  t0 = 1_600_000_000_000
  lines = ["Beginning trial", mllog("init_start", t0 - 5000), mllog("run_start", t0),
           mllog("train_samples", t0, samples)]
  for i, acc in enumerate(accs):
    epoch = 3 + 4 * i
    t = t0 + (i + 1) * 1000
    lines += [mllog("epoch_stop", t, epoch_num=epoch), f"Epoch[{epoch}] Speed: 123 samples/sec",
              mllog("eval_accuracy", t, acc, epoch_num=epoch)]
  lines.append(':::MLLOG {"namespace": "", "time_ms": 16')  # cut short by a dying process
  if status:
    lines.append(mllog("run_stop", t0 + round(minutes * 60000), status=status))
  if ranks > 1:
    lines = [f"[{r}]<stdout>:{line}" for line in lines for r in range(ranks)]
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")
  return path


def test_seed_log_gives_the_published_figures(seed_log):
  run = summarize.summarize_run(seed_log)
  assert round(run["minutes"], 2) == 33.36
  assert run["time_to_train_ms"] == 1594875339620 - 1594873338105
  assert run["converged_epoch"] == 35
  assert run["accuracy"] == 0.76058
  assert run["status"] == "success"
  assert run["epochs_trained"] == 35
  # 1,281,167 x 35 images in 2001.515 s, end to end.
  assert run["images_per_sec"] == pytest.approx(22403.45, abs=0.01)
  assert [e for e, _ in run["curve"]] == list(range(3, 36, 4))


def test_success_run_with_duplicate_ranks(tmp_path):
  run = summarize.summarize_run(write_run(tmp_path / "result_1.txt", 2.5, [0.3, 0.6, 0.77], ranks=3))
  assert run["status"] == "success"
  assert run["time_to_train_ms"] == 150000
  assert run["converged_epoch"] == 11
  assert run["accuracy"] == 0.77
  assert run["curve"] == [(3, 0.3), (7, 0.6), (11, 0.77)]
  assert run["images_per_sec"] == pytest.approx(1000 * 11 / 150)


def test_aborted_and_unfinished_runs(tmp_path):
  run = summarize.summarize_run(write_run(tmp_path / "a.txt", 4.0, [0.3, 0.5], status="aborted"))
  assert run["status"] == "aborted"
  assert run["converged_epoch"] is None
  assert run["accuracy"] == 0.5
  assert run["minutes"] == 4.0
  crashed = summarize.summarize_run(write_run(tmp_path / "b.txt", 4.0, [0.3], status=None))
  assert crashed["status"] == "unfinished"
  assert crashed["minutes"] is None and crashed["images_per_sec"] is None
  (tmp_path / "notes.txt").write_text("no MLPerf lines here\n")
  assert summarize.summarize_run(tmp_path / "notes.txt") is None


def test_score_of_five_runs_drops_fastest_and_slowest(tmp_path):
  for n, minutes in enumerate([30.0, 10.0, 21.0, 20.0, 22.0], 1):
    write_run(tmp_path / "five" / f"result_{n}.txt", minutes, [0.5, 0.76])
  (tmp_path / "five" / "README.md").write_text("not a log\n")
  (runs,) = summarize.collect([tmp_path / "five"]).values()
  assert len(runs) == 5
  assert summarize.mlperf_score(runs) == (21.0, "mean of 3 of 5 runs (fastest and slowest dropped)")


def test_score_with_failed_and_missing_runs(tmp_path):
  runs = [{"status": "success", "minutes": m} for m in (10.0, 20.0, 21.0, 22.0)]
  aborted = {"status": "aborted", "minutes": 5.0}
  # One failed run is the dropped slowest one: 20, 21, 22 remain.
  assert summarize.mlperf_score(runs + [aborted])[0] == 21.0
  assert summarize.mlperf_score(runs[:3] + [aborted, aborted]) == (
      None, "no score: 2 of 5 runs did not succeed (at most 1 may)")
  score, note = summarize.mlperf_score(runs[:2] + [aborted])
  assert score == 15.0 and note.startswith("not a full set (3 of 5 runs)")


def test_cli_table_json_and_plot(tmp_path):
  write_run(tmp_path / "cfg" / "result_1.txt", 2.0, [0.4, 0.7, 0.76])
  write_run(tmp_path / "cfg" / "result_2.txt", 3.0, [0.2, 0.3], status="aborted")
  png = tmp_path / "curves.png"
  cmd = [sys.executable, str(SCRIPT), str(tmp_path / "cfg")]
  out = subprocess.run(cmd + ["--plot", str(png)], capture_output=True, text=True, check=True).stdout
  assert "success" in out and "aborted" in out and "not a full set (2 of 5 runs)" in out
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
  data = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True).stdout)
  assert [r["status"] for r in data["runs"]] == ["success", "aborted"]
  assert data["folders"][0]["score_minutes"] == 2.0
  empty = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "cfg" / "..")],
                         capture_output=True, text=True)
  assert empty.returncode == 1 and "no MLPerf run" in empty.stderr
  missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "cfg"), str(tmp_path / "result_9.txt")],
                           capture_output=True, text=True)
  assert missing.returncode == 2 and f"no such file or folder: {tmp_path / 'result_9.txt'}" in missing.stderr
  assert "Traceback" not in missing.stderr, missing.stderr
