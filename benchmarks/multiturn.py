"""Multi-turn trajectories as verl-agent builds them: what the prefix cache serves, and what
it saves, with the shim's prefix-cache rule.

    $(make python) benchmarks/multiturn.py [--turns 8] [--envs 4] [--smoke]

One in-process engine with the shim (verl-agent's layout: VLLM_ENABLE_V1_MULTIPROCESSING=0), the
embedded tiny checkpoint, float32, eager, block size 16 (as on GPUs), prefix caching on. Each
step sends, per environment, the rules, the history growing turn by turn and a new 256x256
observation image placed mid-text (tests/test_rl_loop.py's multi-turn shape; ids from
examples/verl_agent/molmo2_trajectory.py, as verl-agent sends them), greedy, a few tokens; the
parsed action goes into the next turn's history. Four trajectories run one after the other, in
one run:

  image, cache     the image trajectory with the prefix cache
  image, re-prefill  the same, with the prefix cache emptied before every step
                   (reset_prefix_cache, as after a weight sync): every turn prefills in full
  text, cache      the same rules and history with the board as text instead of an image:
                   no multimodal region, so the shim's rule does not apply (the best case)
  text, re-prefill its full re-prefill

Per turn it prints the prompt tokens (all environments together), "prev prefix": the tokens
vLLM could take from each environment's previous prompt (the block-aligned common prefix), the
tokens RequestOutput.num_cached_tokens says were served from the cache (it can exceed prev
prefix: environments share the rules, so a step's requests also hit each other's blocks), and
the step's wall time (generate(), the shim's image preprocessing included), the median of
--repeats interleaved runs; then the re-prefill / cache time ratios over turns 1.. and whether
cached and re-prefilled runs gave the same responses (they must). The text trajectory's text
before the board is the image trajectory's text before the image, so its cached column is what
the image trajectory would be served without the shim's rule.

The shim's rule (molmo2_shim/engine/scheduling.py, keep_prefix_hit): the original attends
bidirectionally among all image tokens of a sequence at prefill, and the shim recomputes those
rows exactly only in a step that starts at position 0 and holds the whole image region. So a
prefix-cache hit that ends before or inside the image region is dropped (the request prefills
from position 0); a hit covering the whole region is kept (same images, KV computed exactly).
In this trajectory shape the history grows in front of the new image, so each turn's reusable
prefix is text that ends before the image region: every such hit is dropped and every image
turn re-prefills in full. What the rule limits is therefore the reuse of the shared text
before an image (rules + history), not image prompts in general: repeated identical prompts
(n samples of one prompt, a GRPO group's shared first turn) hit past the region and keep the
hit. Text-only turns are unaffected.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "examples" / "verl_agent"))

BLOCK = 16
RULES = (
    "You are an expert Sokoban player. The warehouse is a grid of walls, floor, targets and boxes. "
    "You control the worker. Each turn you may move up, down, left or right. Moving into a box pushes it "
    "one square if the square behind it is free; boxes cannot be pulled, and two boxes cannot be pushed at "
    "once. The puzzle is solved when every box stands on a target. Think about which pushes cannot be "
    "undone before you make them, avoid pushing boxes into corners that are not targets, and answer with "
    "exactly one action in the form <action>direction</action>.\n"
)
ACTIONS = ["up", "down", "left", "right"]


def board_text(env: int, turn: int) -> str:
    """A 6x6 board as the text environments show it (deterministic, different every turn)."""
    cells = "#_OXP"
    rows = []
    for r in range(6):
        rows.append("".join(cells[(env * 7 + turn * 3 + r * 5 + c * 11) % len(cells)] for c in range(6)))
    return "\n".join(rows)


def prompt_text(history: str, observation: str) -> str:
    return f"{RULES}{history}# Current Step\nYour observation: {observation}\nNext action?"


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run_trajectory(llm, tok, images: bool, use_cache: bool, turns: int, envs: int, max_tokens: int):
    from molmo2_trajectory import molmo2_prompt_ids
    from vllm import SamplingParams

    import golden

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    llm.reset_prefix_cache()
    histories = [""] * envs
    previous: list[list[int] | None] = [None] * envs
    rows, responses = [], []
    for turn in range(turns):
        requests = []
        for e in range(envs):
            if images:
                obs = golden.pil_image("rgb", 256, 256, 1000 * e + turn)
                ids = molmo2_prompt_ids(tok, prompt_text(histories[e], "<image>"), True)
                requests.append({"prompt_token_ids": ids, "multi_modal_data": {"image": [obs]}})
            else:
                ids = molmo2_prompt_ids(tok, prompt_text(histories[e], "\n" + board_text(e, turn)), False)
                requests.append({"prompt_token_ids": ids})
        if not use_cache:
            llm.reset_prefix_cache()
        start = time.perf_counter()
        outs = llm.generate(requests, params, use_tqdm=False)
        wall = time.perf_counter() - start
        prompt = reusable = cached = 0
        for e, out in enumerate(outs):
            ids = list(out.prompt_token_ids)
            prompt += len(ids)
            if use_cache and previous[e] is not None:
                # vLLM reuses whole blocks, and never the last prompt token.
                reusable += min(common_prefix(previous[e], ids), len(ids) - 1) // BLOCK * BLOCK
            cached += out.num_cached_tokens or 0
            previous[e] = ids
            response = list(out.outputs[0].token_ids)
            responses.append(response)
            histories[e] += f"Step {turn + 1}: <action>{ACTIONS[response[0] % 4]}</action>. The worker moved.\n"
        rows.append({"prompt": prompt, "reusable": reusable, "cached": cached, "time": wall})
    return rows, responses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--envs", type=int, default=4, help="environments stepped together (one batch per turn)")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each trajectory (median time per turn)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=4096, help="the step budget (>= one image region)")
    ap.add_argument("--smoke", action="store_true", help="2 turns, 1 environment, a small engine (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.turns, args.envs, args.max_tokens, args.max_num_batched_tokens, args.repeats = 2, 1, 2, 2048, 1
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # verl-agent's in-process engine
    import vllm
    from vllm import LLM

    import golden
    import molmo2_shim

    status = molmo2_shim.install()
    start = time.perf_counter()
    llm = LLM(model=str(golden.CHECKPOINT), dtype="float32", enforce_eager=True, max_model_len=2048,
              max_num_batched_tokens=args.max_num_batched_tokens, limit_mm_per_prompt={"image": 1, "video": 0}, seed=0,
              enable_prefix_caching=True, block_size=BLOCK)
    print(f"vLLM {vllm.__version__}, molmo2-shim {status.action} ({status.patch_set}); engine built in "
          f"{time.perf_counter() - start:.1f}s; {args.envs} environments x {args.turns} turns, "
          f"{args.max_tokens} output tokens per step, {args.repeats} repeats, step budget {args.max_num_batched_tokens} tokens", flush=True)
    tok = llm.get_tokenizer()
    # Warm-up (first-step allocations, the image path), then an empty cache.
    from vllm import SamplingParams

    llm.generate([{"prompt": "<|image|>Warm up.", "multi_modal_data": {"image": [golden.pil_image("rgb", 256, 256, 99)]}},
                  {"prompt": "Warm up."}], SamplingParams(max_tokens=2), use_tqdm=False)
    # Each trajectory `--repeats` times, the four interleaved (the CPU is shared: drift hits all
    # four alike); per turn the median time, tokens and responses from every repeat (they agree).
    runs: dict[str, list] = {}
    for _ in range(args.repeats):
        for label, images, cache in (("image, cache", True, True), ("image, re-prefill", True, False),
                                     ("text, cache", False, True), ("text, re-prefill", False, False)):
            runs.setdefault(label, []).append(run_trajectory(llm, tok, images, cache, args.turns, args.envs, args.max_tokens))
    sides = {}
    for label, reps in runs.items():
        rows = [dict(r, time=statistics.median(rep[0][t]["time"] for rep in reps)) for t, r in enumerate(reps[0][0])]
        if any(rep[1] != reps[0][1] or [r["cached"] for r in rep[0]] != [r["cached"] for r in reps[0][0]] for rep in reps):
            print(f"{label}: repeats disagree")
            return 1
        sides[label] = (rows, reps[0][1])

    for kind in ("image", "text"):
        on, on_resp = sides[f"{kind}, cache"]
        off, off_resp = sides[f"{kind}, re-prefill"]
        print(f"\n{kind} trajectory ({'a new 256x256 image per turn' if kind == 'image' else 'board as text'})")
        print(f"{'turn':>4} {'prompt tok':>10} {'prev prefix':>11} {'cached':>7} {'cache s':>8} {'re-prefill s':>12} {'ratio':>6}")
        for t, (a, b) in enumerate(zip(on, off)):
            print(f"{t:>4} {a['prompt']:>10} {a['reusable']:>11} {a['cached']:>7} {a['time']:>8.3f} {b['time']:>12.3f} "
                  f"{b['time'] / a['time']:>6.2f}")
        later = range(1, len(on))
        if later:
            t_on = sum(on[t]["time"] for t in later)
            t_off = sum(off[t]["time"] for t in later)
            share = sum(on[t]["cached"] for t in later) / sum(on[t]["prompt"] for t in later)
            median = statistics.median(off[t]["time"] / on[t]["time"] for t in later)
            print(f"turns 1..{len(on) - 1}: {share:.0%} of prompt tokens from the cache; re-prefill / cache time "
                  f"{t_off / t_on:.2f}x (sum), {median:.2f}x (median per turn)")
        print(f"responses identical with and without the cache: {'yes' if on_resp == off_resp else 'NO'}")
        if on_resp != off_resp:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
