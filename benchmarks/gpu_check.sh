#!/usr/bin/env bash
# The checks to run when a GPU is available (`make gpu-check`; a few minutes): the
# device-dependent tests on CUDA (GRADLAB_TEST_DEVICE=cuda: training, AMP fp16 with a
# GradScaler, engines, edits, diagnostics, gradcheck, tests/system/test_cuda.py), a real run, and
# the CUDA figures of the epoch benchmark. Without a GPU the tests say so in their header
# and run on the CPU, and the benchmark prints "skipped".
#
# On a lent GPU machine without this project's virtualenv, run it with the machine's own
# python3 (PYTHON unset); packages that machine lacks travel as wheels in .whl/ (pydantic,
# pydantic-core, annotated-types, typing-inspection, mlxtend) and are installed first.
set -uo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 GRADLAB_TEST_DEVICE=cuda
status=0
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi: no NVIDIA GPU on this machine"
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

echo "== device-dependent tests (GRADLAB_TEST_DEVICE=cuda)"
timeout 240 "$PYTHON" -m pytest -p no:cacheprovider -q tests/system/test_cuda.py tests/training/test_train.py \
    tests/training/test_engines.py tests/training/test_strategies.py tests/training/test_editing.py \
    tests/training/test_diagnostics.py 2>&1 | tee "$OUT/device-tests.log" | tail -25
status=$((status || PIPESTATUS[0]))

echo "== gradlab train on the GPU (device auto: fp16 autograd with a GradScaler)"
timeout 60 "$PYTHON" -m gradlab.cli train configs/quickstart.yaml --runs-dir "$OUT/runs" --quiet
status=$((status || $?))

echo "== benchmark (CPU loops, then CUDA)"
timeout 200 "$PYTHON" benchmarks/epoch.py --quick --rounds 3 --no-memory 2>&1 | tee "$OUT/bench.log"
status=$((status || PIPESTATUS[0]))
exit $status
