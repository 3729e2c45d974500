"""Helpers to drive a real vLLM engine and compare it with the golden outputs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import golden

VOCAB = 512  # the tiny checkpoint's LM head (logits beyond it are -inf by design)
# VLLM_PLUGINS that excludes the shim but keeps the test environment's CPU platform plugin
# (tools/vllm_cpu_platform_hint; vLLM 0.11.0 filters platform plugins by VLLM_PLUGINS too).
PLUGINS_WITHOUT_SHIM = "cpu_hint"
SMALL_BUDGET = 1424  # a step budget above one image region of the tiny checkpoint (1401), below two 640x480 images


def engine_kwargs(**overrides: Any) -> dict[str, Any]:
    kw = dict(
        model=str(golden.CHECKPOINT),
        dtype="float32",
        enforce_eager=True,
        max_model_len=4096,
        max_num_batched_tokens=4096,
        limit_mm_per_prompt={"image": 4, "video": 1},
        max_logprobs=-1,
        seed=0,
    )
    kw.update(overrides)
    return kw


def checkpoint_state() -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(golden.CHECKPOINT / "model.safetensors"))


def vllm_model(llm: Any) -> Any:
    """The model object of an in-process engine (where verl reaches it to sync weights)."""
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner.model


class InProcessEngine:
    """An in-process engine that starts on dummy weights and is synced to the checkpoint, with
    LoRA enabled (verl adds adapters to it from tensors)."""

    def __init__(self, llm: Any, before_sync: Any) -> None:
        self.llm = llm
        self.before_sync = before_sync

    @classmethod
    def start(cls) -> InProcessEngine:
        # LoRA on, as verl's LoRA rollouts build it: linear weights become `...base_layer.weight`.
        llm = in_process_llm(load_format="dummy", block_size=16, enable_lora=True, max_lora_rank=16, max_loras=2)
        before = llm.generate([golden_request("text_only")], full_logprob_params())[0]
        engine = cls(llm, before)
        engine.restore_checkpoint()
        return engine

    @property
    def model(self) -> Any:
        return vllm_model(self.llm)

    def restore_checkpoint(self) -> set[str]:
        """verl's sequence: load_weights with the trainer's state, then reset_prefix_cache()."""
        loaded = self.model.load_weights(iter(checkpoint_state().items()))
        self.llm.reset_prefix_cache()
        return loaded

    def close(self) -> None:
        del self.llm


def in_process_llm(**overrides: Any) -> Any:
    """An engine built in this process, as verl's external_launcher builds it (no engine-core
    child), with the shim installed; vLLM reads the switch only while the engine is built."""
    from vllm import LLM

    import molmo2_shim

    molmo2_shim.install()
    previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        return LLM(**engine_kwargs(enable_prefix_caching=True, **overrides))
    finally:
        if previous is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous


def golden_request(name: str) -> dict[str, Any]:
    case = golden.manifest()["model_cases"][name]
    request: dict[str, Any] = {"prompt": case["prompt"]}
    images = golden.model_case_images(name)
    if images:
        request["multi_modal_data"] = {"image": images}
    video = case["sources"].get("video")
    if video:
        frames = golden.synth_video(video["num_frames"], video["width"], video["height"], video["seed"])
        meta = {"fps": video["fps"], "frames_indices": list(range(video["num_frames"])),
                "total_num_frames": video["num_frames"], "duration": video["num_frames"] / video["fps"]}
        request["multi_modal_data"] = {"video": (frames, meta)}
    return request


def full_logprob_params(max_tokens: int = 16, prompt: bool = True) -> Any:
    """Greedy, with the full distribution of every prompt position (and of generated tokens).

    prompt=False leaves prompt logprobs off: requests that ask for them never read the prefix
    cache, so prefix-cache tests must not.
    """
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0, max_tokens=max_tokens, ignore_eos=True, prompt_logprobs=-1 if prompt else None, logprobs=-1
    )


def greedy_params(max_tokens: int = 16) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)


def _dist(entry: dict[int, Any]) -> np.ndarray:
    out = np.full(VOCAB, -np.inf)
    for tok, lp in entry.items():
        if tok < VOCAB:
            out[tok] = lp.logprob
    return out


def position_logprobs(output: Any) -> np.ndarray:
    """[S, VOCAB] log-probabilities vLLM assigned after each prompt position.

    Rows 0..S-2 come from prompt_logprobs (shifted: entry i is the distribution that predicted
    token i), the last row from the first generated token's logprobs.
    """
    rows = [_dist(d) for d in output.prompt_logprobs[1:]]
    rows.append(_dist(output.outputs[0].logprobs[0]))
    return np.stack(rows)


def centered(x: np.ndarray) -> np.ndarray:
    """Logits up to their per-position additive constant, which softmax ignores."""
    return x - x.mean(axis=-1, keepdims=True)


def logits_difference(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| over positions and vocabulary, up to each position's additive constant."""
    return float(np.abs(centered(np.asarray(got, np.float64)) - centered(np.asarray(ref, np.float64))).max())


def logit_error(output: Any, reference_logits: np.ndarray) -> float:
    """max |(vLLM log-probs) - (reference logits)| after removing each position's constant."""
    return logits_difference(position_logprobs(output), reference_logits)


def assert_matches_golden(output: Any, name: str, *, check_logits: bool = True) -> None:
    z = golden.model_case(name)
    assert list(output.prompt_token_ids) == z["input_ids"].tolist(), f"{name}: prompt ids differ from the original's"
    assert list(output.outputs[0].token_ids) == z["generate_bidir"].tolist(), f"{name}: greedy continuation differs"
    if check_logits:
        error = logit_error(output, z["logits_bidir"])
        assert error <= golden.ENGINE_LOGIT_TOLERANCE, f"{name}: logits differ from the original's by {error:.2e}"
