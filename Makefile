# The two commands a new user runs (README): `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# ImageNet encoder weights: $MOBILESEG_ENCODER_WEIGHTS, else the offline copy beside the repo if present,
# else torchvision's download (needs the network once; then the torch hub cache).
SHARED_WEIGHTS := ../shared/weights/mobilenet_v2_imagenet.pt
ENCODER ?= $(if $(MOBILESEG_ENCODER_WEIGHTS),imagenet,$(if $(wildcard $(SHARED_WEIGHTS)),$(SHARED_WEIGHTS),imagenet))
DEMO_EPOCHS ?= 12

.PHONY: install demo test lint clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,export,serve,mobile,tensorboard,mlflow,hub,convert]"
	touch $@

install: $(BIN)/.installed

# Train + evaluate on the bundled pets sample; prints where the model, plots and metrics are.
demo: install
	$(BIN)/mobileseg train epochs=$(DEMO_EPOCHS) encoder_weights=$(ENCODER) name=demo exist_ok=true
	$(BIN)/mobileseg test weights=runs/train/demo/weights/best.pt name=demo exist_ok=true
	@echo
	@echo "Model:   runs/train/demo/weights/best.pt   (model card: runs/train/demo/README.md)"
	@echo "Plots:   runs/train/demo/results.png, runs/train/demo/val_predictions.png"
	@echo "Test:    runs/test/demo/metrics.json, runs/test/demo/predictions.png, runs/test/demo/worst.png"

# The layer contracts (pyproject's [tool.importlinter]) first: a new back-arrow fails the tests, then the suite with
# the docstrings' examples (--doctest-modules over src/).
# The suite runs on every core (pytest-xdist, one pinned single-threaded worker per core, each module on one worker so
# its fixtures are built once), then the `serial` tests, which time thread counts or start a process per core, alone.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not serial"
	$(BIN)/python -m pytest -m serial

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache
