"""doctor / explain / check-prompt name the right cause for failures reproduced for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import golden
from engine_helpers import PLUGINS_WITHOUT_SHIM

pytestmark = pytest.mark.engine


def cli(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molmo2_shim", *args], input=stdin, capture_output=True, text=True,
                          timeout=600, env=env or dict(os.environ))


def explain_keys(text: str) -> list[str]:
    proc = cli("--json", "explain", stdin=text)
    return [d["key"] for d in json.loads(proc.stdout)["diagnoses"]]


def env_without_shim() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MOLMO2_SHIM_DISABLE"}
    env["VLLM_PLUGINS"] = PLUGINS_WITHOUT_SHIM
    return env


def test_plugin_excluded_by_vllm_plugins():
    code = textwrap.dedent(f"""
        if __name__ == "__main__":
            from vllm import LLM
            LLM(model={str(golden.CHECKPOINT)!r}, dtype="float32", enforce_eager=True, max_model_len=2048)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env_without_shim(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert explain_keys(proc.stderr)[0] == "remote-code-required"
    doctor = cli("--json", "doctor", env=env_without_shim())
    assert doctor.returncode == 1
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["VLLM_PLUGINS"]["ok"] is False and "molmo2_shim" in checks["VLLM_PLUGINS"]["fix"]
    assert checks["fresh vLLM process"]["ok"] is False


def test_architecture_not_known_in_a_process_without_the_shim():
    code = ("from vllm.model_executor.models import ModelRegistry\n"
            "ModelRegistry._raise_for_unsupported(['Molmo2ForConditionalGeneration'])\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env_without_shim(), capture_output=True, text=True, timeout=300)
    assert "Molmo2ForConditionalGeneration" in proc.stderr
    assert explain_keys(proc.stderr)[0] == "architecture-not-supported"


@pytest.fixture(scope="module")
def vllm_processor():
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    import molmo2_shim

    molmo2_shim.install()
    config = ModelConfig(model=str(golden.CHECKPOINT), tokenizer=str(golden.CHECKPOINT), max_model_len=4096,
                         limit_mm_per_prompt={"image": 2, "video": 1}, mm_processor_cache_gb=0)
    return MULTIMODAL_REGISTRY.create_processor(config)


def test_seed_error_found_0_placeholders(vllm_processor, monkeypatch):
    """The seed's port: the HF processor does not expand images but is trusted to."""
    from vllm.multimodal.processing import BaseMultiModalProcessor

    monkeypatch.setattr(type(vllm_processor), "_hf_processor_applies_updates", lambda self, *a, **k: True)
    image = golden.model_case_images("one_image_640x480")
    with pytest.raises(Exception) as exc:
        BaseMultiModalProcessor.apply(vllm_processor, "<|im_start|>user\nhi<|im_end|>\n", {"image": image}, {})
    text = f"{type(exc.value).__name__}: {exc.value}"
    assert "found 0" in text
    diagnosis = json.loads(cli("--json", "explain", text).stdout)["diagnoses"][0]
    assert diagnosis["key"] == "placeholders-missing" and diagnosis["facts"]["found"] == "0"


def test_failed_prompt_replacement_without_placeholders(vllm_processor):
    """vLLM's own pipeline on a placeholder-free prompt (what verl-agent sends) without the
    shim's normalisation."""
    from vllm.multimodal.processing import BaseMultiModalProcessor

    image = golden.model_case_images("one_image_640x480")
    with pytest.raises(Exception) as exc:
        BaseMultiModalProcessor.apply(vllm_processor, [2, 1, 77, 78], {"image": image}, {})
    keys = explain_keys(f"{type(exc.value).__name__}: {exc.value}")
    assert keys[0] in ("prompt-replacement-failed", "placeholders-missing")


def test_placeholder_count_mismatch_is_refused_with_a_clear_cause(vllm_processor):
    from molmo2_shim.errors import Molmo2InputError

    image = golden.model_case_images("one_image_640x480")
    with pytest.raises(Molmo2InputError) as exc:
        vllm_processor.apply("<|image|><|image|>Describe.", {"image": image}, {})
    text = f"molmo2_shim.errors.Molmo2InputError: {exc.value}"
    diagnosis = json.loads(cli("--json", "explain", text).stdout)["diagnoses"][0]
    assert diagnosis["key"] == "shim-input" and "2 '<|image|>' placeholders" in diagnosis["cause"]


RECORDED = {
    # vLLM 0.15.0 native Molmo2 with prompt_logprobs on an image prompt (tests/test_native.py's setup).
    "native-logprobs-oob": "RuntimeError: index 516 is out of bounds for dimension 1 with size 512",
    # vLLM 0.11.1-0.12 deprecation warning (verbatim).
    "legacy-batching-warning": "WARNING 11-28 [utils.py:421] The legacy code for batching multi-modal kwargs is "
                               "deprecated and will be removed in v0.12. Please update your model with "
                               "`merge_by_field_config=True` to use the new code defined by `MultiModalFieldConfig`.",
    # vLLM 0.10.2 / 0.11.0 wording of the placeholder check.
    "placeholders-missing": "RuntimeError: Expected there to be 2 prompt updates corresponding to 2 image items, "
                            "but instead found 0 prompt updates! This is likely because you forgot to include input "
                            "placeholder tokens",
}


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_recorded_failure_texts(key):
    assert explain_keys(RECORDED[key])[0] == key


def test_explain_unknown_input_says_so():
    proc = cli("explain", "some unrelated error about disk space")
    assert proc.returncode == 3 and "Not a known" in proc.stdout


@pytest.fixture
def checkpoint_without_im_col(tmp_path) -> Path:
    dst = tmp_path / "broken-ckpt"
    shutil.copytree(golden.CHECKPOINT, dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"):
        p = dst / name
        p.write_text(p.read_text().replace("<im_col>", "<im_column>"))
    return dst


def test_tokenizer_missing_im_col(checkpoint_without_im_col, tmp_path):
    doctor = cli("--json", "doctor", "--no-child", str(checkpoint_without_im_col))
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 1
    assert checks["special tokens"]["ok"] is False and "<im_col>" in checks["special tokens"]["detail"]
    image = tmp_path / "img.png"
    golden.model_case_images("one_image_640x480")[0].save(image)
    report = json.loads(cli("--json", "check-prompt", str(checkpoint_without_im_col), "--image", str(image),
                            "--prompt", "<|image|>Describe.").stdout)
    assert not report["ok"] and "<im_col>" in report["error"]


def test_check_prompt_agrees_with_the_engine(tmp_path):
    from vllm import LLM, SamplingParams

    import molmo2_shim

    molmo2_shim.install()
    name = "two_images_300x200_500x800"
    paths = []
    for i, im in enumerate(golden.model_case_images(name)):
        paths += ["--image", str(tmp_path / f"{i}.png")]
        im.save(paths[-1])
    prompt = golden.manifest()["model_cases"][name]["prompt"]
    report = json.loads(cli("--json", "check-prompt", str(golden.CHECKPOINT), *paths, "--prompt", prompt).stdout)
    llm = LLM(model=str(golden.CHECKPOINT), dtype="float32", enforce_eager=True, max_model_len=4096,
              limit_mm_per_prompt={"image": 2, "video": 0})
    out = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": golden.model_case_images(name)}}],
                       SamplingParams(max_tokens=1))[0]
    assert report["ok"] and report["shape"] == "placeholders" and report["first_difference"] is None
    assert report["token_ids"] == list(out.prompt_token_ids)
    assert sum(im["tokens"] for im in report["images"]) == int(golden.model_case(name)["token_type_ids"].sum())
    assert len(report["images"]) == 2


def test_cli_help_and_usage_errors():
    assert cli("--help").returncode == 0
    assert cli("check-prompt").returncode == 2
