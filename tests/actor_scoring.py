"""Score rollout responses with an actor model on `molmo2_shim.verl.collate` batches.

Imported by tests/test_rl_loop.py (original remote code, in a vLLM test environment) and run as
a script in the transformers >= 5.20 reference environment (native Molmo2), where vLLM cannot
be installed:

    python tests/actor_scoring.py ROLLOUT.pt CHECKPOINT     prints {"max_error": ..., ...} as JSON
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch


def response_logprobs(model: Any, examples: list[dict[str, torch.Tensor]], responses: list[list[int]],
                      pad_token_id: int, padding_side: str, native: bool, vocab: int,
                      with_token_types: bool = True) -> list[list[float]]:
    """The actor's log-prob of each response token, micro-batch by micro-batch as verl computes them."""
    from molmo2_shim.verl import MASK_KEY, collate, split_by_modality

    out: list[list[float]] = [[] for _ in examples]
    for group in split_by_modality(examples, native):
        batch = collate([examples[i] for i in group], pad_token_id, padding_side, native=native)
        if not with_token_types:
            batch.pop(MASK_KEY[native])  # what the actor gets when nothing passes the image mask
        width = batch["input_ids"].shape[1]
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits.double()
        logp = torch.log_softmax(logits[..., :vocab], dim=-1)
        for row, i in enumerate(group):
            length, n = int(examples[i]["input_ids"].shape[1]), len(responses[i])
            start = (width - length if padding_side == "left" else 0) + length - n - 1  # position predicting token 0
            out[i] = [float(logp[row, start + k, t]) for k, t in enumerate(responses[i])]
    return out


def max_error(actor: list[list[float]], rollout: list[list[float]]) -> float:
    return max(abs(a - b) for xs, ys in zip(actor, rollout) for a, b in zip(xs, ys))


def main(path: str, checkpoint: str) -> int:
    from transformers import AutoModelForImageTextToText

    data = torch.load(path, weights_only=False)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="sdpa").eval()
    result = {"transformers_class": type(model).__module__}
    for side in ("left", "right"):
        actor = response_logprobs(model, data["examples"], data["responses"], data["pad_token_id"], side, True,
                                  data["vocab"])
        result[f"max_error_{side}"] = max_error(actor, data["rollout_logprobs"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
