#!/usr/bin/env bash
# Makes a Debian/Ubuntu machine ready to run tf_rn50: system packages, .venv on Python 3.11 or 3.12,
# the pinned stack of requirements.txt (horovod built from source with TensorFlow + Gloo, and
# MPI/NCCL when present), and the package in editable mode. Idempotent: on a ready machine it only
# checks (a few seconds).
#   scripts/setup.sh                    # set up or check
#   FORCE=1 scripts/setup.sh            # reinstall the stack
#   PYTHON=python3.12 scripts/setup.sh  # the Python of a new .venv (default: python3.11, else python3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
STAMP=$VENV/.tf_rn50-stack

say() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# --- the Python of a new .venv: 3.11 or 3.12 (TF 2.17.1 has wheels for both; horovod 0.28.1 and the
# DALI plugin build on both), 3.11 first.
need_debs=()
if [ ! -x "$PY" ]; then
  BASE_PY=${PYTHON:-$(command -v python3.11 || command -v python3.12 || command -v python3 || true)}
  [ -n "$BASE_PY" ] || die "no python3.11 or python3.12 on PATH"
  version=$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$BASE_PY does not run"
  [[ $version == 3.1[12] ]] || die "$BASE_PY is Python $version; tf_rn50 needs 3.11 or 3.12"
  # Debian's own Pythons keep the headers (horovod compiles against them) and venv in extra packages.
  has_dev='import ensurepip, os, sysconfig; assert os.path.exists(sysconfig.get_path("include") + "/Python.h")'
  "$BASE_PY" -c "$has_dev" 2>/dev/null || need_debs+=("python$version-dev" "python$version-venv")
fi

# --- system packages: a compiler and cmake for horovod; the hash headers TF 2.17's headers include;
# and the shell linter that the tests of the launch scripts run.
for deb in cmake g++ make libhighwayhash-dev libfarmhash-dev shellcheck; do
  dpkg -s "$deb" >/dev/null 2>&1 || need_debs+=("$deb")
done
if ((${#need_debs[@]})); then
  command -v apt-get >/dev/null || die "missing ${need_debs[*]} and no apt-get: install them by hand"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  say "installing system packages: ${need_debs[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_debs[@]}" >/dev/null \
    || die "apt-get install ${need_debs[*]} failed"
fi

# --- the virtualenv.
[ -x "$PY" ] || { say "creating $VENV with $BASE_PY (Python $version)"; "$BASE_PY" -m venv "$VENV"; }

want="$(sha256sum requirements.txt setup.cfg | sha256sum | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  # Ready: the stack passed the checks at the end of this script when it was installed. Importing it
  # again costs half a minute, so only the installed versions are compared with the pins.
  "$PY" - <<'EOF' || die "FORCE=1 scripts/setup.sh reinstalls the stack"
import importlib.metadata as md, re, sys
for name, pinned in re.findall(r"^([\w.-]+)==(\S+)", open("requirements.txt").read(), re.M):
  try:
    installed = md.version(name)
  except md.PackageNotFoundError:
    installed = "missing"
  if installed != pinned:
    sys.exit(f"[setup] ERROR: {name} is {installed}, requirements.txt pins {pinned}")
EOF
  say "ready: $VENV (the pinned stack, checked when installed)"
  exit 0
fi

# --- the pinned stack.
pin() { grep -E "^$1==" requirements.txt; }
say "installing the pinned stack"
"$PY" -m pip install -q --upgrade pip wheel setuptools
"$PY" -m pip install -q -r <(grep -vE '^(#|horovod==|nvidia-dali-tf-plugin)' requirements.txt)

# horovod: TensorFlow + Gloo always; MPI and NCCL when this machine has them.
hvd_env=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1)
if command -v mpicxx >/dev/null; then hvd_env+=(HOROVOD_WITH_MPI=1); else hvd_env+=(HOROVOD_WITHOUT_MPI=1); fi
if [ -e /usr/include/nccl.h ] || [ -n "${HOROVOD_NCCL_HOME:-}" ]; then hvd_env+=(HOROVOD_GPU_OPERATIONS=NCCL); fi
if ! "$PY" -c 'import horovod, horovod.tensorflow as h; assert horovod.__version__ == "0.28.1"; h.init()' 2>/dev/null; then
  say "building $(pin horovod) with ${hvd_env[*]} (about 4 minutes on 2 cores)"
  env "${hvd_env[@]}" "$PY" -m pip install -q --no-build-isolation --no-cache-dir --force-reinstall --no-deps "$(pin horovod)" \
    || die "horovod build failed; rerun with pip -v to see the compiler output"
  "$PY" -m pip install -q "$(pin horovod)"   # its pure-Python dependencies
fi
if ! "$PY" -c 'import nvidia.dali.plugin.tf' 2>/dev/null; then
  say "building $(pin nvidia-dali-tf-plugin-cuda120) against the installed TensorFlow"
  "$PY" -m pip install -q --no-build-isolation --no-cache-dir --force-reinstall --no-deps "$(pin nvidia-dali-tf-plugin-cuda120)" \
    || die "DALI TF plugin install failed"
fi
"$PY" -m pip install -q --no-deps -e .

# --- checks of a new install: the imports, and horovodrun built with TensorFlow and Gloo.
TF_CPP_MIN_LOG_LEVEL=3 "$PY" - <<'EOF' || die "the stack does not import; FORCE=1 scripts/setup.sh reinstalls it"
import tensorflow, keras, horovod.tensorflow, nvidia.dali.plugin.tf, mlperf_logging.mllog, tf_rn50
print(f"[setup] tensorflow {tensorflow.__version__}, keras {keras.__version__}, horovod {horovod.__version__}, "
      f"dali {nvidia.dali.__version__}")
EOF
build=$("$VENV/bin/horovodrun" --check-build 2>&1)
grep -q '\[X\] TensorFlow' <<<"$build" || die "horovod was built without TensorFlow:\n$build"
grep -q '\[X\] Gloo' <<<"$build" || die "horovod was built without Gloo:\n$build"
echo "$want" > "$STAMP"   # only now: the next run skips all of the above
say "ready: $VENV"
