#!/usr/bin/env bash
# The checks to run when a GPU machine is lent (one call, well inside 10 minutes):
# the test suite (tests/test_cuda.py runs only there), a real run on CUDA, and the speed
# figures. Python packages the GPU image lacks travel as wheels in .whl/ (see the device
# notes): pydantic, pydantic-core, annotated-types, typing-inspection, mlxtend.
#   usage (on the GPU machine, from the repository root): bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'

echo "== CUDA tests"
timeout 150 python3 -m pytest -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.log" | tail -25

echo "== gradlab train on CUDA (auto: fp16 autograd)"
timeout 60 python3 -m gradlab.cli train configs/quickstart.yaml --runs-dir "$OUT/runs" --quiet
python3 -c "import json,glob; [print(p, json.load(open(p))['status'], json.load(open(p))['final_test_accuracy']) for p in glob.glob('$OUT/runs/*/summary.json')]"

echo "== whole suite"
timeout 200 python3 -m pytest -p no:cacheprovider -n 8 tests 2>&1 | tee "$OUT/suite.log" | tail -15

echo "== benchmark"
timeout 200 python3 benchmarks/epoch.py --quick --rounds 3 --no-memory 2>&1 | tee "$OUT/bench.log"
