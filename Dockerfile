# tf_rn50 in NVIDIA's NGC TensorFlow container. 25.02-tf2-py3 is NGC's last TensorFlow release:
# Ubuntu 24.04 (Python 3.12), CUDA 12.8, TensorFlow 2.17.0 (NVIDIA build, Keras 3), NCCL, Horovod
# built with NCCL and MPI, DALI with its TensorFlow plugin. This file adds only what the image
# lacks: mlperf-logging, absl-py and the DALI TF plugin when missing, and tf_rn50 itself; then it
# checks that the stack imports.
#   docker build -t tf_rn50:25.02 .
#   CONT=tf_rn50:25.02 DATADIR=... LOGDIR=... scripts/run_with_docker.sh   (see docs/operations.md)
# Versions below are requirements.txt's pins (tests/test_ops.py checks that they agree).
FROM nvcr.io/nvidia/tensorflow:25.02-tf2-py3

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
WORKDIR /workspace/tf_rn50

# What the image lacks. The DALI TF plugin is compiled against the installed TensorFlow, so it is
# installed without a wheel cache, together with the DALI release it must match.
RUN python -m pip install --no-cache-dir mlperf-logging==4.1.68 \
 && (python -c "import absl.flags" 2>/dev/null \
     || python -m pip install --no-cache-dir absl-py==2.5.1) \
 && (python -c "import nvidia.dali.plugin.tf" 2>/dev/null \
     || (python -m pip install --no-cache-dir nvidia-dali-cuda120==2.4.0 \
         && python -m pip install --no-cache-dir --no-build-isolation nvidia-dali-tf-plugin-cuda120==2.4.0))

# The package. Its dependencies are the image's own builds (--no-deps).
COPY . .
RUN python -m pip install --no-cache-dir --no-deps -e .

# Build-time check: the stack imports, Horovod has TensorFlow and NCCL, TF is 2.17 with Keras 3.
RUN python -c "import tensorflow as tf, keras; \
assert tf.__version__.startswith('2.17'), tf.__version__; \
assert keras.__version__.startswith('3.'), keras.__version__; \
import horovod.tensorflow as hvd; assert hvd.nccl_built(), 'horovod without NCCL'; \
import nvidia.dali, nvidia.dali.plugin.tf, mlperf_logging.mllog, absl.flags, tf_rn50; \
print('tensorflow', tf.__version__, 'keras', keras.__version__, 'dali', nvidia.dali.__version__)" \
 && horovodrun --check-build | tee /dev/stderr | grep -q '\[X\] NCCL'
