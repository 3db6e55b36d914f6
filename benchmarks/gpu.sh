#!/usr/bin/env bash
# Everything vitkit checks on a CUDA GPU, in one go: the CUDA tests (every small model computes the
# same function and gradients on the GPU as on the CPU; training with bf16/fp16 autocast learns and
# resumes), then `vitkit bench --device cuda` (fp32 and bf16 autocast vs HF and vit-pytorch, batch 32
# and 256) and the efficient-ViT benchmark on CUDA. Results go to OUT (default benchmarks/results);
# the exit status is non-zero if any step failed.
#
#   bash benchmarks/gpu.sh [OUT]        # python3 must have a CUDA build of torch and vitkit's dependencies
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
rc=0
tests="python3 -m pytest -q -p no:cacheprovider tests/models/test_cuda.py tests/train/test_cuda.py"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    echo; echo "\$ $tests"
    $tests 2>&1
} | tee "$out/gpu_tests.txt" || rc=1
python3 -m vitkit bench --device cuda --out "$out" || rc=1
python3 -m vitkit bench --device cuda --batch 256 --models vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224 \
    --out "$out" || rc=1
python3 benchmarks/efficient.py --device cuda --out "$out" || rc=1
exit $rc
