"""Molmo2 at real scale on a GPU: the shim's exact model vs vLLM's native Molmo2, one run.

Needs vLLM 0.22 (which has a native Molmo2; the shim overrides it only in the `shim` side)
and, for the reference, transformers >= 5.20 (native Molmo2) on `--reference-path`.

    python benchmarks/gpu/run_gpu.py all --ckpt /data/molmo2-4b-random --out results/

Steps (each also runs alone: checkpoint, reference, engine --side shim|native, report):
  checkpoint  the released Molmo2-4B config with random bf16 weights in the original key
              names, written once and reused (identical weights for every engine);
  reference   transformers' native Molmo2 in float32 on the GPU (the stand-in for the
              original; it matches the original's math, see docs/benchmarks.md), fed the
              shim's processor outputs (bit-identical to the original processor's);
  engine      vLLM with its defaults (bf16, CUDA graphs, torch.compile), the shim
              (MOLMO2_SHIM_OVERRIDE_NATIVE=1) or native: parity log-probs on three prompts,
              output tok/s at batch 32 with and without images, TTFT with an image,
              single-stream decode tok/s;
  report      both engines against the reference, side by side (report.md, results.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

TEXT = "<|im_start|>user\nDescribe what you see in as much detail as you can.<|im_end|>\n<|im_start|>assistant\n"
PARITY = {
    "one_image": ("<|image|>" + TEXT, [(640, 480, 1)]),
    "two_images": ("Image 1<|image|>Image 2<|image|>" + TEXT, [(300, 200, 2), (500, 800, 3)]),
    "text_only": (TEXT, []),
}
TOP = 20


def images_for(spec: list[tuple[int, int, int]]) -> list[Any]:
    import golden

    return [golden.pil_image("rgb", w, h, seed) for w, h, seed in spec]


# -- reference ------------------------------------------------------------------------------

def reference(ckpt: Path, out: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from molmo2_shim.processing.processor import Molmo2Processor

    proc = Molmo2Processor.from_pretrained(ckpt)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=torch.float32).to(device).eval()
    results = {}
    for name, (prompt, spec) in PARITY.items():
        batch = proc(text=prompt, images=images_for(spec) or None)
        kwargs: dict[str, Any] = {"input_ids": batch["input_ids"].to(device),
                                  "mm_token_type_ids": batch["token_type_ids"].long().to(device)}
        if spec:
            # transformers' model wants pooling indices offset across images (the original's
            # processor and the shim keep them per image).
            crops = batch["image_num_crops"].tolist()
            patches = batch["pixel_values"].shape[1]
            rows = [g[0] * g[1] + g[2] * g[3] for g in batch["image_grids"].tolist()]
            offsets = torch.repeat_interleave(torch.tensor([0, *crops[:-1]]).cumsum(0) * patches, torch.tensor(rows))
            pooling = batch["image_token_pooling"]
            pooling = torch.where(pooling >= 0, pooling + offsets[:, None], pooling)
            kwargs.update(pixel_values=batch["pixel_values"].to(device), image_token_pooling=pooling.to(device),
                          image_grids=batch["image_grids"].to(device), image_num_crops=batch["image_num_crops"].to(device))
        with torch.no_grad():
            logits = model(**kwargs).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        ids = kwargs["input_ids"][0]
        nxt = ids[1:]
        # Image special tokens lie past the head: -inf, as the shim reports them.
        token_lp = torch.full(nxt.shape, float("-inf"), device=device)
        inside = nxt < logprobs.shape[-1]
        token_lp[inside] = logprobs[:-1][inside].gather(1, nxt[inside][:, None])[:, 0]
        results[name] = {
            "ids": ids.tolist(),
            "token_logprobs": token_lp.tolist(),
            "last": logprobs[-1].cpu().numpy().astype(np.float32).tolist(),
        }
    (out / "reference.json").write_text(json.dumps(results))


# -- engines --------------------------------------------------------------------------------

def engine(ckpt: Path, out: Path, side: str, tp: int, quick: bool = False) -> None:
    if side == "shim":
        os.environ["MOLMO2_SHIM_OVERRIDE_NATIVE"] = "1"
    from vllm import LLM, SamplingParams

    import molmo2_shim

    status = molmo2_shim.install()
    start = time.perf_counter()
    kw: dict[str, Any] = {"enforce_eager": True, "dtype": "float32"} if quick else {"dtype": "bfloat16", "gpu_memory_utilization": 0.85}
    llm = LLM(model=str(ckpt), max_model_len=4096 if quick else 8192, max_num_batched_tokens=8192,
              limit_mm_per_prompt={"image": 2, "video": 0}, max_logprobs=TOP, tensor_parallel_size=tp, seed=0, **kw)
    startup = time.perf_counter() - start
    result: dict[str, Any] = {"side": side, "status": status.action, "startup_s": startup, "parity": {}}
    for name, (prompt, spec) in PARITY.items():
        # vLLM's native Molmo2 crashes on prompt logprobs of image prompts (ids past its head).
        prompt_lp = 0 if side == "shim" or not spec else None
        request: dict[str, Any] = {"prompt": prompt}
        if spec:
            request["multi_modal_data"] = {"image": images_for(spec)}
        o = llm.generate([request], SamplingParams(temperature=0, max_tokens=1, logprobs=TOP, prompt_logprobs=prompt_lp),
                         use_tqdm=False)[0]
        entry: dict[str, Any] = {"ids": list(o.prompt_token_ids),
                                 "last_top": {str(t): lp.logprob for t, lp in o.outputs[0].logprobs[0].items()}}
        if o.prompt_logprobs:
            entry["token_logprobs"] = [d[t].logprob for d, t in zip(o.prompt_logprobs[1:], o.prompt_token_ids[1:])]
        result["parity"][name] = entry
    result["throughput"] = throughput(llm, 4, 16) if quick else throughput(llm)
    (out / f"engine_{side}.json").write_text(json.dumps(result))


def throughput(llm: Any, batch: int = 32, tokens: int = 128) -> dict[str, float]:
    from vllm import SamplingParams

    import golden

    def timed(requests: list[dict], tokens: int) -> float:
        params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        start = time.perf_counter()
        llm.generate(requests, params, use_tqdm=False)
        return time.perf_counter() - start

    def best(make: Any, tokens: int) -> float:
        # Each round gets fresh prompts and images, as rollouts do: nothing comes from vLLM's
        # prefix cache or its multimodal processor cache.
        times = []
        for round_ in (1, 2):
            llm.reset_prefix_cache()
            times.append(timed(make(round_), tokens))
        return min(times)

    def image_batch(round_: int) -> list[dict]:
        return [{"prompt": "<|image|>" + TEXT,
                 "multi_modal_data": {"image": [golden.pil_image("rgb", 640, 480, 1000 * round_ + i)]}}
                for i in range(batch)]

    def text_batch(round_: int) -> list[dict]:
        return [{"prompt": TEXT.replace("detail", f"detail, part {round_}.{i},")} for i in range(batch)]

    timed(image_batch(0)[:2] + text_batch(0)[:2], 8)  # warm-up
    out = {
        f"image_batch{batch}_tok_s": batch * tokens / best(image_batch, tokens),
        f"text_batch{batch}_tok_s": batch * tokens / best(text_batch, tokens),
    }
    # The same images once more (GRPO samples several responses per image): preprocessing now
    # comes from vLLM's processor cache, so this isolates the GPU path.
    llm.reset_prefix_cache()
    out[f"image_batch{batch}_seen_images_tok_s"] = batch * tokens / timed(image_batch(2), tokens)
    first = statistics.median(timed([{"prompt": TEXT}], 1) for _ in range(3))
    full = statistics.median(timed([{"prompt": TEXT}], 256) for _ in range(3))
    out["single_stream_decode_tok_s"] = 255 / (full - first)
    out["ttft_image_s"] = statistics.median(
        timed([{"prompt": "<|image|>" + TEXT, "multi_modal_data": {"image": [golden.pil_image("rgb", 640, 480, 500 + i)]}}], 1)
        for i in range(7)
    )
    return out


# -- report ---------------------------------------------------------------------------------

def compare(engine_entry: dict, ref: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {"ids_equal": float(engine_entry["ids"] == ref["ids"])}
    last = [abs(lp - ref["last"][int(t)]) for t, lp in engine_entry["last_top"].items()]
    out["last_top_max_abs"] = max(last)
    if "token_logprobs" in engine_entry and engine_entry["ids"] == ref["ids"]:
        pairs = zip(engine_entry["token_logprobs"], ref["token_logprobs"])
        diffs = [abs(a - b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        out["prompt_max_abs"] = max(diffs)
        out["prompt_mean_abs"] = sum(diffs) / len(diffs)
    else:
        out["prompt_max_abs"] = out["prompt_mean_abs"] = None
    return out


def report(out: Path, device: str, checkpoint: str) -> None:
    ref = json.loads((out / "reference.json").read_text())
    sides = {s: json.loads((out / f"engine_{s}.json").read_text()) for s in ("shim", "native") if (out / f"engine_{s}.json").is_file()}
    results = {"device": device, "parity": {}, "throughput": {s: e["throughput"] for s, e in sides.items()},
               "startup_s": {s: e["startup_s"] for s, e in sides.items()}}
    for name in PARITY:
        results["parity"][name] = {s: compare(e["parity"][name], ref[name]) for s, e in sides.items()}
    lines = [f"# Molmo2 checkpoint {checkpoint} on {device}", "",
             "Log-prob deviation from transformers' native Molmo2 in float32 (the reference); engines in bf16 "
             "(float32 with --quick):", "",
             "| prompt | engine | ids equal | last position, top-20 max \\|Δ\\| | whole prompt max \\|Δ\\| | mean \\|Δ\\| |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    for name, per_side in results["parity"].items():
        for side, c in per_side.items():
            lines.append(f"| {name} | {side} | {bool(c['ids_equal'])} | {fmt(c['last_top_max_abs'])} | "
                         f"{fmt(c['prompt_max_abs'])} | {fmt(c['prompt_mean_abs'])} |")
    lines += ["", "| metric | shim | native | shim / native |", "|---|---|---|---|"]
    if len(sides) == 2:
        for key in sides["shim"]["throughput"]:
            a, b = sides["shim"]["throughput"][key], sides["native"]["throughput"][key]
            ratio = (b / a) if key.startswith("ttft") else (a / b)
            lines.append(f"| {key} | {a:.3f} | {b:.3f} | {ratio:.3f}{' (faster)' if key.startswith('ttft') else ''} |")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["all", "checkpoint", "reference", "engine", "report"])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--side", choices=["shim", "native"])
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: float32, eager, tiny batches")
    ap.add_argument("--reference-path", default=os.environ.get("GPU_TF", ""),
                    help="PYTHONPATH entry holding transformers >= 5.20 for the reference step")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "checkpoint":
        import checkpoint

        if not (args.ckpt / "DONE").is_file():
            checkpoint.write_checkpoint(args.ckpt, HERE / "molmo2-4b", "bfloat16", 0, "cuda")
    elif args.step == "reference":
        reference(args.ckpt, args.out)
    elif args.step == "engine":
        engine(args.ckpt, args.out, args.side, args.tp, args.quick)
    elif args.step == "report":
        import torch

        report(args.out, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", args.ckpt.name)
    else:
        me = [sys.executable, __file__, "--ckpt", str(args.ckpt), "--out", str(args.out), "--tp", str(args.tp),
              *(["--quick"] if args.quick else [])]
        ref_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (args.reference_path, str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        for step, extra, env in [("checkpoint", [], None), ("reference", [], ref_env),
                                 ("engine", ["--side", "shim"], None), ("engine", ["--side", "native"], None),
                                 ("report", [], None)]:
            print(f"== {step} {' '.join(extra)}", flush=True)
            subprocess.run([*me[:2], step, *me[2:], *extra], check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
