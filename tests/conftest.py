"""Fixtures shared by the test files."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import summarize  # noqa: E402  (scripts/ is not a package)


@pytest.fixture
def seed_log():
  """The seed's MLPerf log, which lives in the project's shared/ folder beside the clone."""
  if not summarize.SEED_LOG.is_file():
    pytest.skip(f"the seed's log is not at {summarize.SEED_LOG} (shared/reference/ beside this clone)")
  return summarize.SEED_LOG
