"""The Molmo2 branch of verl-agent's TrajectoryCollector.preprocess_single_sample.

verl-agent (agent_system/multi_turn_rollout/rollout_loop.py) builds each step's sample for
Qwen-VL: it replaces `<image>` with Qwen's vision tokens, runs only the image processor and
tokenises the actor's ids without special tokens. For Molmo2 the sample must instead carry the
ids vLLM will use (BOS included, image blocks expanded), the original processor's tensors, and
the image mask the original needs; `molmo2_shim.verl.verl_row` builds exactly that, from the
same code the rollout's vLLM processor runs. Call `molmo2_sample` from preprocess_single_sample
when `self.processor` is Molmo2's:

    if getattr(self.config.actor_rollout_ref.model, "molmo2", False):
        return molmo2_sample(self.tokenizer, self.processor, obs_text, obs_image, self.config.data)

The environment's text keeps its `<image>` where the environment puts it (mid-text in Sokoban,
first in gym_cards); it becomes Molmo2's `<|image|>` placeholder there, and vLLM and the actor
see the same ids.
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.verl import verl_row


def molmo2_prompt_ids(tokenizer: Any, obs_text: str, has_image: bool) -> list[int]:
    """The environment's observation as chat-template ids, `<image>` -> Molmo2's placeholder.

    verl-agent formats the observation with string content, so the chat template writes no
    placeholder of its own; the one in the text is kept where the environment put it.
    """
    text = obs_text.replace("<image>", "<|image|>") if has_image else obs_text.replace("<image>", "")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=False)
    return tokenizer.encode(prompt, add_special_tokens=False)


def molmo2_sample(tokenizer: Any, processor: Any, obs_text: str, obs_image: Any, data_config: Any) -> dict[str, Any]:
    """One row for verl-agent's batch: the fields preprocess_single_sample returns, for Molmo2."""
    images = [obs_image] if obs_image is not None else None
    ids = molmo2_prompt_ids(tokenizer, obs_text, images is not None)
    return verl_row(processor, ids, max_prompt_length=data_config.max_prompt_length,
                    response_length=data_config.max_response_length, pad_token_id=tokenizer.pad_token_id, images=images)
