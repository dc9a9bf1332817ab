"""tf_rn50: MLPerf Training ResNet-50 v1.5 in TensorFlow/Keras 3, Horovod and DALI."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
