"""The verl / verl-agent rollout path: activation by import, verl's request format, and
rollout log-probs against the original model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import golden
from engine_helpers import PLUGINS_WITHOUT_SHIM

pytestmark = pytest.mark.engine

CASES = ["one_image_640x480", "two_images_300x200_500x800"]


def test_external_lib_import_alone_builds_an_in_process_engine():
    """verl's `external_lib` imports a module and calls nothing; with the entry point excluded,
    `import molmo2_shim.auto` must be enough for verl's in-process (external_launcher) engine."""
    code = textwrap.dedent(f"""
        import json
        import molmo2_shim.auto
        from vllm import LLM, SamplingParams
        llm = LLM(model={str(golden.CHECKPOINT)!r}, dtype="float32", enforce_eager=True, max_model_len=2048,
                  load_format="dummy", limit_mm_per_prompt={{"image": 1, "video": 0}})
        model = llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
        out = llm.generate([{{"prompt_token_ids": [1, 2, 3]}}], SamplingParams(max_tokens=2))[0]
        print("RESULT " + json.dumps([type(model).__module__, molmo2_shim.auto.STATUS.action, len(out.outputs[0].token_ids)]))
    """)
    env = dict(os.environ, VLLM_PLUGINS=PLUGINS_WITHOUT_SHIM, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    module, action, generated = json.loads(lines[-1][7:])
    assert module.startswith("molmo2_shim.patches.") and action == "installed" and generated == 2


@pytest.fixture(scope="module")
def rollout_llm(inprocess):
    return inprocess.llm


def verl_params(max_tokens: int = 16, logprobs: int = 0):
    from vllm import SamplingParams

    # What verl's vLLMRollout passes (plus greedy, to compare with the golden continuation).
    return SamplingParams(n=1, logprobs=logprobs, detokenize=False, temperature=0, max_tokens=max_tokens, ignore_eos=True)


def _text_ids(tokenizer, name: str) -> list[int]:
    prompt = golden.manifest()["model_cases"][name]["prompt"]
    return tokenizer.encode(prompt.split("<|image|>")[-1], add_special_tokens=False)


@pytest.mark.parametrize("name", CASES)
def test_verl_request_shapes_produce_the_original_ids(rollout_llm, name):
    """verl-agent: ids without image tokens + PIL images; verl agent loop: HF-expanded ids."""
    images = golden.model_case_images(name)
    z = golden.model_case(name)
    requests = [
        {"prompt_token_ids": _text_ids(rollout_llm.get_tokenizer(), name), "multi_modal_data": {"image": images}},
        {"prompt_token_ids": z["input_ids"].tolist(), "multi_modal_data": {"image": images}},
    ]
    for out in rollout_llm.generate(requests, verl_params()):
        assert out.prompt_token_ids == z["input_ids"].tolist()
        assert list(out.outputs[0].token_ids) == z["generate_bidir"].tolist()


@pytest.mark.parametrize("name", ["text_only", *CASES, "video_4f_320x240"])
def test_rollout_logprobs_agree_with_the_original(rollout_llm, name):
    """The numbers RL cares about: log-probs vLLM reports for the tokens it samples.

    The original's logits give the first generated token's full distribution; for the
    following decode steps the golden data records the original's top-1 minus top-2 logit
    margin, which the rollout's top-2 log-probs reproduce.
    """
    from engine_helpers import golden_request

    z = golden.model_case(name)
    margins = golden.manifest()["model_cases"][name]["generate_bidir_top1_minus_top2"]
    out = rollout_llm.generate([golden_request(name)], verl_params(logprobs=2))[0].outputs[0]
    assert list(out.token_ids) == z["generate_bidir"].tolist()
    ref = z["logits_bidir"][-1].astype(np.float64)
    ref_logprobs = ref - np.log(np.exp(ref - ref.max()).sum()) - ref.max()
    first = out.logprobs[0][out.token_ids[0]].logprob
    errors = [abs(first - ref_logprobs[out.token_ids[0]])]
    for step, entry in enumerate(out.logprobs):
        top = sorted((lp.logprob for lp in entry.values()), reverse=True)[:2]
        errors.append(abs((top[0] - top[1]) - margins[step]))
    print(f"{name}: max |rollout - original| over 16 steps = {max(errors):.2e}")
    assert max(errors) < golden.ENGINE_LOGIT_TOLERANCE


def test_verls_vocabulary_mask_leaves_the_shims_distribution_unchanged(inprocess):
    """verl (async rollout in 0.6.1, every rollout in 0.7) wraps compute_logits with
    `logits[..., len(tokenizer):] = -inf`. The shim returns a logit for every id the tokenizer
    knows (image special tokens at -inf), so the mask removes nothing that could be sampled and
    the rollout's log-probs stay the original's."""
    from types import MethodType

    from engine_helpers import full_logprob_params, golden_request

    llm, model = inprocess.llm, inprocess.model
    width = len(llm.get_tokenizer())
    request = golden_request("one_image_640x480")
    before = llm.generate([request], full_logprob_params(4, prompt=False))[0].outputs[0]
    unmasked = model.compute_logits

    def compute_logits(self, *args, **kwargs):  # verl's _monkey_patch_compute_logits
        logits = unmasked(*args, **kwargs)
        assert logits.shape[-1] >= width, "every tokenizer id must have a logit column"
        logits[..., width:] = float("-inf")
        return logits

    model.compute_logits = MethodType(compute_logits, model)
    try:
        after = llm.generate([request], full_logprob_params(4, prompt=False))[0].outputs[0]
    finally:
        del model.compute_logits
    assert after.token_ids == before.token_ids
    for a, b in zip(after.logprobs, before.logprobs):
        assert {t: round(lp.logprob, 6) for t, lp in a.items() if t < VOCAB} == \
               {t: round(lp.logprob, 6) for t, lp in b.items() if t < VOCAB}
        assert all(lp.logprob == float("-inf") for t, lp in a.items() if t >= VOCAB)


VOCAB = 512
