"""Registration reaches the processes vLLM starts: the registry-inspection child and the
engine core, through install() and through the plugin entry point alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import golden
from engine_helpers import PLUGINS_WITHOUT_SHIM

pytestmark = pytest.mark.engine

SHIM_MODULE_PREFIX = "molmo2_shim.patches."


def run_fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter (as vLLM's own children start), returning its output."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("VLLM_PLUGINS", "MOLMO2_SHIM_DISABLE")}
    full_env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # lets the probe send a function to the engine core
    full_env.update(env)
    script = "if __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(code), "    ")
    return subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=600)


ENGINE_PROBE = f"""
import json
{{setup}}
from vllm import LLM, SamplingParams
llm = LLM(model={str(golden.CHECKPOINT)!r}, dtype="float32", enforce_eager=True, max_model_len=2048,
          limit_mm_per_prompt={{{{"image": 1, "video": 0}}}})
def model_module(worker):
    return type(worker.model_runner.model).__module__
modules = llm.collective_rpc(model_module)
out = llm.generate([{{{{"prompt": "Hello"}}}}], SamplingParams(max_tokens=4, temperature=0))[0]
print("RESULT " + json.dumps({{{{"modules": modules, "ids": list(out.prompt_token_ids)}}}}))
"""


def _result(proc: subprocess.CompletedProcess) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result; stderr tail:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("setup", ["import molmo2_shim; molmo2_shim.install()",
                                   pytest.param("pass", marks=pytest.mark.row_subset)], ids=["install", "entry_point_only"])
def test_engine_core_process_runs_the_shim_model(setup):
    result = _result(run_fresh(ENGINE_PROBE.format(setup=setup)))
    assert all(m.startswith(SHIM_MODULE_PREFIX) for m in result["modules"]), result["modules"]
    assert result["ids"][0] == 2, "the original's BOS (<|im_end|>) starts every prompt"


INSPECT_PROBE = """
import json
{setup}
from vllm.model_executor.models import ModelRegistry
info = ModelRegistry._try_inspect_model_cls("Molmo2ForConditionalGeneration")
entry = ModelRegistry.models.get("Molmo2ForConditionalGeneration")
print("RESULT " + json.dumps({{"inspected": info is not None and bool(info.supports_multimodal),
                              "pp": info is not None and bool(info.supports_pp),
                              "module": getattr(entry, "module_name", None)}}))
"""


@pytest.mark.parametrize("setup", ["import molmo2_shim; molmo2_shim.install()",
                                   pytest.param("from vllm.plugins import load_general_plugins; load_general_plugins()",
                                                marks=pytest.mark.row_subset)],
                         ids=["install", "entry_point_only"])
def test_registry_inspection_child_resolves_the_shim_class(setup):
    result = _result(run_fresh(INSPECT_PROBE.format(setup=setup)))
    assert result == {"inspected": True, "pp": True, "module": "molmo2_shim.registered_model"}


def test_registered_module_name_does_not_collide_with_vllm_models():
    import vllm.model_executor.models as models_pkg

    from molmo2_shim.engine.identifiers import MODEL_REFERENCE

    leaf = MODEL_REFERENCE.split(":")[0].rsplit(".", 1)[-1]
    assert not (os.path.exists(os.path.join(os.path.dirname(models_pkg.__file__), leaf + ".py")))


def test_plugins_excluded_gives_the_documented_failure():
    """VLLM_PLUGINS without `molmo2_shim` and no explicit install(): the checkpoint's model
    type is unknown to vLLM and transformers (see README, troubleshooting)."""
    proc = run_fresh(ENGINE_PROBE.format(setup="pass"), VLLM_PLUGINS=PLUGINS_WITHOUT_SHIM)
    assert proc.returncode != 0
    assert "molmo2" in proc.stderr and "RESULT" not in proc.stdout
