"""Makes `scripts/<tool>` run under this clone's .venv (made by scripts/setup.sh) with nothing activated.

A tool imports it first, before any third-party module:

  import in_venv  # noqa: F401  (first: reruns this tool under .venv/bin/python)

When the tool is run as a program by another Python, the process is replaced by the same command under
.venv/bin/python. Nothing happens when it already runs there, when .venv is absent (a container, or a
Python the user prepared), or when the tool is imported (tests). Either way this clone's tf_rn50 is the one
imported, installed or not.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
REEXEC = "TF_RN50_IN_VENV"  # set for the rerun only: a broken .venv cannot make it loop

run_as_tool = os.path.dirname(os.path.realpath(sys.argv[0])) == os.path.dirname(os.path.realpath(__file__))
if (run_as_tool and not os.environ.pop(REEXEC, None) and os.path.exists(PYTHON)
    and os.path.realpath(sys.prefix) != os.path.realpath(VENV)):
  os.execve(PYTHON, [PYTHON, *sys.argv], {**os.environ, REEXEC: "1"})
if ROOT not in sys.path:
  sys.path.insert(1, ROOT)
