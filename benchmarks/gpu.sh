#!/usr/bin/env bash
# One command on a GPU machine: resnet_torch vs torchvision and resnet_keras vs keras.applications
# (JAX backend) on one GPU, in img/s and MFU; under 10 minutes on an H100/H200 (benchmarks/README.md).
#
#   benchmarks/gpu.sh                       # results into benchmarks/results/gpu-<gpu>-*.md/.json
#   benchmarks/gpu.sh --out-dir "$OUT"      # elsewhere (the device tool brings back $OUT)
#   benchmarks/gpu.sh --dry-run             # on CPU, tiny: checks the script (tests/test_benchmarks.py)
#
# Keras is needed for the second part; a machine without it (and without network) takes it from
# wheels in .whl/, downloaded beforehand where pip works:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       keras==3.15.1 namex==0.1.0 optree==0.20.0
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import keras" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site .whl/*.whl
        export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "gpu.sh: Keras is not installed and .whl/ holds no wheels (see the comment at the top)" >&2
        exit 2
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# the torch part first, then JAX in its own process (JAX would otherwise take the GPU's memory);
# one part failing does not cost the other's results
status=0
KERAS_BACKEND=${KERAS_BACKEND:-jax} "$PY" benchmarks/bench_gpu.py --part torch "$@" || status=$?
KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" benchmarks/bench_gpu.py --part keras "$@" || status=$?
exit $status
