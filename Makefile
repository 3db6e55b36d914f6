# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   train + evaluate a ViT on bundled real digits (CPU), pictures in runs/demo
#   make test   the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build that this machine kind provides; a range would pull CUDA wheels.
TORCH  ?= torch==2.13.0

.PHONY: demo test venv venv-test clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	@touch $@

# Test extras: pytest, HF transformers (the oracle), the locked MiniLM text tower (CLIP/LiT), ONNX
# (export + ONNX Runtime, a speed peer), the server stack (`vitkit serve`) and selenium, and
# vector-quantize-pytorch (a VQ peer). vit-pytorch is a peer installed without its torchvision
# dependency (torchvision does not import with this torch, and breaks transformers).
$(VENV)/.test: $(VENV)/.core
	$(BIN)/pip install -q -e ".[test,hf,text,onnx,serve]" vector-quantize-pytorch
	$(BIN)/pip install -q --no-deps vit-pytorch
	-$(BIN)/pip uninstall -y -q torchvision
	# the browser tests (`vitkit serve`'s page, the demo's index.html): Debian's Chromium and its driver
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
	@touch $@

venv: $(VENV)/.core
venv-test: $(VENV)/.test

demo: $(VENV)/.core
	$(BIN)/vitkit train --config configs/demo_mnist.yaml --out runs/demo
	$(BIN)/vitkit eval runs/demo

test: $(VENV)/.test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs build src/*.egg-info
