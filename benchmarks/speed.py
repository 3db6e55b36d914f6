"""Speed of vitkit's ViT against HF transformers, ONNX Runtime and vit-pytorch, side by side.

    python benchmarks/speed.py            # = vitkit bench: writes results/speed.{md,json}
    python benchmarks/speed.py --quick    # a tiny model, one repeat (the test suite runs this)

The measurement lives in `vitkit.bench.speed` (so `vitkit bench` runs it too); see its docstring.
"""
import sys

from vitkit.bench.speed import main

if __name__ == "__main__":
    main(sys.argv[1:])
