# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fgvc-installed
DEMO_DIR ?= demo_out

.PHONY: demo test test-fast lint bench bench-server clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/fgvc data synth $(DEMO_DIR)/data --layout competition --classes 10 --per-class 60 --size 224
	$(BIN)/fgvc data check $(DEMO_DIR)/data
	$(BIN)/fgvc train --config demo --data $(DEMO_DIR)/data --out $(DEMO_DIR)/run
	$(BIN)/fgvc evaluate $(DEMO_DIR)/run --data $(DEMO_DIR)/data --split val
	$(BIN)/fgvc predict $(DEMO_DIR)/run --data $(DEMO_DIR)/data --out $(DEMO_DIR)/predictions --group demo
	$(BIN)/fgvc explain $(DEMO_DIR)/run $$(ls $(DEMO_DIR)/data/test/*.jpg | head -n 4) --data $(DEMO_DIR)/data \
		--out $(DEMO_DIR)/explain
	$(BIN)/fgvc score $(DEMO_DIR)/predictions/submission.json --labels $(DEMO_DIR)/data/test_labels.csv \
		--classes $(DEMO_DIR)/run/classes.json
	@echo
	@echo "artefacts:"
	@echo "  data         $(DEMO_DIR)/data"
	@echo "  run          $(DEMO_DIR)/run  (best.pt, last.pt, metrics.csv, config.yaml)"
	@echo "  evaluation   $(DEMO_DIR)/run/eval_val/metrics.json"
	@echo "  predictions  $(DEMO_DIR)/predictions/predictions.csv"
	@echo "  submission   $(DEMO_DIR)/predictions/submission.json"
	@echo "  pictures     $(DEMO_DIR)/explain/*.png"
	@echo
	@echo "report: $(abspath $(DEMO_DIR))/run/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# `fgvc server` under a deadline rush (SQLite; PostgreSQL too when FGVC_TEST_POSTGRES_URL is set, as .ci/run does)
bench-server: $(STAMP)
	$(BIN)/python benchmarks/server.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
