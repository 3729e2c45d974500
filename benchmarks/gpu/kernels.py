"""Where the shim's exact prefill spends GPU time, one kernel at a time, on the engine
benchmark's image batch (32 prompts with one new 640x480 image each, Molmo2-4B shapes).

Two pieces of work native vLLM does differently, timed per batch on random bf16 data:

- the recomputation of the image query rows after vLLM's causal attention (every decoder
  layer): the padded SDPA groups against each fused variable-length kernel available here
  (vLLM's FlashAttention, torch's varlen_attn), each checked against a float32 dense reference
  with the original's mask;
- the ViT's attention, which the original (and so the shim) runs in float32 when the config
  says `float32_attention`: SDPA's float32 kernel (the original's) and the shim's Triton kernel
  (molmo2_shim/model/float32_attention.py) at its default tiles and the other tile shapes of
  TILE_SWEEP, each against float64; next to them the same attention in bf16, which is what
  native does.

    python benchmarks/gpu/kernels.py --ckpt CHECKPOINT_DIR [--tp 2] [--out results/]
    python benchmarks/gpu/kernels.py --ckpt tests/fixtures/molmo2-tiny --smoke   # CI: runs, no timing

(CHECKPOINT_DIR: the one `run_gpu.py checkpoint` writes; only its config and processor files
are read.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))

DEVICE = "cuda"
# Tile shapes (query rows, keys per block, warps, stages) timed next to the shim's default.
TILE_SWEEP = [(128, 64, 8, 2), (128, 32, 4, 2), (128, 32, 8, 2), (128, 64, 4, 3), (64, 32, 4, 2), (64, 64, 4, 2),
              (64, 32, 4, 3)]
PROMPT = "<|image|><|im_start|>user\nDescribe what you see in as much detail as you can.<|im_end|>\n<|im_start|>assistant\n"


def batch_layout(config_dir: Path, batch: int) -> tuple[torch.Tensor, torch.Tensor, list[int], int]:
    """The flat token ids and positions of the batch's prefill step, the multimodal mask and the
    number of ViT crops, from the shim's processor on the checkpoint's own processor files."""
    import golden
    from molmo2_shim.processing.layout import CONFIG_ID_FIELDS, MM_TOKEN_KEYS
    from molmo2_shim.verl import actor_inputs, processor_of

    config = json.loads((config_dir / "config.json").read_text())
    mm_ids = [config[CONFIG_ID_FIELDS[k]] for k in MM_TOKEN_KEYS if config.get(CONFIG_ID_FIELDS[k]) is not None]
    prompt_ids = processor_of(str(config_dir)).tokenize(PROMPT)
    ids, crops = [], 0
    for i in range(batch):
        example = actor_inputs(str(config_dir), prompt_ids, [golden.distinct_image(640, 480, i)])
        ids.append(torch.as_tensor(example["input_ids"]).reshape(-1))
        crops += int(example["image_num_crops"].sum())
    flat = torch.cat(ids)
    positions = torch.cat([torch.arange(len(x)) for x in ids])
    return flat, positions, mm_ids, crops


def cuda_ms(fn: Any, reps: int = 10) -> float:
    """Median milliseconds per call (CUDA events on the GPU, wall clock for the CPU smoke run)."""
    fn()
    times = []
    for _ in range(reps):
        if DEVICE != "cuda":
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
            continue
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def reference_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, is_mm: torch.Tensor,
                   heads: int, kv_heads: int, dim: int) -> torch.Tensor:
    """float32 masked attention per request (causal, plus every multimodal key for multimodal
    queries), the rows of multimodal queries only."""
    starts = torch.nonzero(positions == 0).squeeze(1).tolist() + [positions.numel()]
    out = []
    for a, b in zip(starts[:-1], starts[1:]):
        n = b - a
        mm = is_mm[a:b].to(q.device)
        allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril() | mm[None, :]
        qs = q[a:b].float().view(n, heads, dim).transpose(0, 1)
        ks = k[a:b].float().view(n, kv_heads, dim).transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        vs = v[a:b].float().view(n, kv_heads, dim).transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed, scale=dim**-0.5).transpose(0, 1)
        out.append(o.reshape(n, heads * dim)[mm])
    return torch.cat(out)


def recompute(flat: torch.Tensor, positions: torch.Tensor, mm_ids: list[int], heads: int, kv_heads: int, dim: int,
              layers: int) -> dict[str, Any]:
    import os

    import molmo2_shim.model.bidirectional as bidir
    from molmo2_shim.engine.features import varlen_kernels

    torch.manual_seed(0)
    total = flat.numel()
    dev = torch.device(DEVICE)
    q = torch.randn(total, heads * dim, device=dev, dtype=torch.bfloat16)
    k = torch.randn(total, kv_heads * dim, device=dev, dtype=torch.bfloat16)
    v = torch.randn(total, kv_heads * dim, device=dev, dtype=torch.bfloat16)
    is_mm = torch.isin(flat, torch.tensor(mm_ids))
    ref = reference_rows(q, k, v, positions, is_mm, heads, kv_heads, dim)
    flat_dev, pos_dev = flat.to(dev), positions.to(dev)
    results: dict[str, Any] = {}
    for kernel in ["sdpa", *(varlen_kernels() if DEVICE == "cuda" else [])]:
        os.environ[bidir.KERNEL_ENV] = kernel
        plan = bidir.BidirectionalPrefill(mm_ids)
        out = torch.zeros(total, heads * dim, device=dev, dtype=torch.bfloat16)

        def step(plan: Any = plan, out: torch.Tensor = out) -> None:
            plan.note_input_ids(flat_dev, has_mm_embeddings=True)
            plan.begin_step(pos_dev)
            for _ in range(layers):
                plan.apply(q, k, v, out, heads, kv_heads, dim, dim**-0.5)
            plan.end_step()

        ms = cuda_ms(step)
        step()
        err = (out[is_mm.to(dev)].float() - ref).abs().max().item()
        results[kernel] = {"ms_per_batch": ms, "max_abs_err_vs_fp32": err}
        print(f"recompute {kernel:>13}: {ms:8.2f} ms per batch ({layers} layers), max |err| vs fp32 {err:.4f}", flush=True)
    os.environ.pop(bidir.KERNEL_ENV, None)
    return results


def vit(crops: int, tokens: int, heads: int, dim: int, layers: int) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from molmo2_shim.model.float32_attention import DEFAULT_TILES, Tiles, triton_available, triton_float32_attention

    torch.manual_seed(0)
    dev = torch.device(DEVICE)
    q, k, v = (torch.randn(crops, heads, tokens, dim, device=dev, dtype=torch.bfloat16) for _ in range(3))

    def sdpa_as(cast: torch.dtype, backend: Any = None) -> Any:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                return F.scaled_dot_product_attention(q.to(cast), k.to(cast), v.to(cast)).to(torch.bfloat16)
        return attend

    def triton_with(tiles: Tiles) -> Any:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return triton_float32_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dim**-0.5,
                                            tiles).transpose(1, 2)
        return attend

    variants = [("float32, SDPA's choice (original)", sdpa_as(torch.float32)),
                ("float32, SDPA's math backend", sdpa_as(torch.float32, SDPBackend.MATH)),
                ("bfloat16, SDPA's choice (native)", sdpa_as(torch.bfloat16))]
    if DEVICE == "cuda" and triton_available():
        # The shim's default tiles first, then the other shapes of the sweep.
        sweep = [DEFAULT_TILES, *(t for t in map(Tiles._make, TILE_SWEEP) if t != DEFAULT_TILES)]
        variants[1:1] = [(f"float32, Triton kernel, tiles {tuple(t)}" + (" (default)" if t == DEFAULT_TILES else ""),
                          triton_with(t)) for t in sweep]
    # Accuracy on a few crops: the bf16 outputs against float64 attention rounded once to bf16
    # (the share of outputs off by a rounding step, and the largest difference).
    few = slice(0, min(crops, 4))
    exact = F.scaled_dot_product_attention(q[few].double(), k[few].double(), v[few].double()).to(torch.bfloat16)
    results = {}
    for name, attend in variants:
        def run(attend: Any = attend) -> None:
            for _ in range(layers):
                attend(q, k, v)

        ms = cuda_ms(run)
        out = attend(q[few], k[few], v[few])
        off = (out != exact).float().mean().item()
        err = (out.float() - exact.float()).abs().max().item()
        results[name] = {"ms_per_batch": ms, "share_off_float64": off, "max_abs_diff_float64": err}
        print(f"ViT attention {name:>40}: {ms:8.2f} ms per batch ({crops} crops x {tokens} tokens, {layers} layers); "
              f"vs float64: {off:.2e} of outputs differ, max {err:.4f}", flush=True)
    return results


def run(ckpt: Path, out: Path | None, batch: int = 32, tp: int = 1) -> dict[str, Any]:
    cfg = json.loads((ckpt / "config.json").read_text())
    text, vit_cfg = cfg["text_config"], cfg["vit_config"]
    flat, positions, mm_ids, crops = batch_layout(ckpt, batch)
    image_rows = int(torch.isin(flat, torch.tensor(mm_ids)).sum())
    device = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (smoke run)"
    print(f"{batch} prompts: {flat.numel()} tokens, {image_rows} image rows, {crops} crops; {device}, tp {tp}", flush=True)
    res = {
        "tokens": flat.numel(), "image_rows": image_rows, "crops": crops, "tp": tp,
        "recompute": recompute(flat, positions, mm_ids, text["num_attention_heads"] // tp,
                               text["num_key_value_heads"] // tp, text["head_dim"], text["num_hidden_layers"]),
        "vit": vit(crops, (vit_cfg["image_default_input_size"][0] // vit_cfg["image_patch_size"]) ** 2,
                   vit_cfg["num_attention_heads"] // tp, vit_cfg["head_dim"],
                   vit_cfg["num_hidden_layers"] + 1 + max(cfg["adapter_config"]["vit_layers"])),
    }
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"kernels_tp{tp}.json").write_text(json.dumps(res, indent=1))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True, help="checkpoint folder (config, tokenizer, processor files)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tp", type=int, default=1, help="heads per GPU as under this tensor-parallel size")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--smoke", action="store_true", help="on the CPU, two prompts: that the script runs, not a timing")
    args = ap.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
    run(args.ckpt, args.out, 2 if args.smoke else args.batch, args.tp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
