"""A Molmo2 checkpoint with a real config and random weights, in the original key names.

The weights are random (the real ones are not needed to compare engines on the same
weights); the config, preprocessor, chat template and token ids are the released Molmo2-4B
ones (molmo2-4b/, copied from the hub files). The tokenizer is synthetic: the tiny test
tokenizer's byte-level BPE, padded to Qwen's 151,643 regular ids, then the real 303 special
tokens at their real ids, so every id the model and processor use is the real one.

    python benchmarks/gpu/checkpoint.py OUT_DIR [--config-dir DIR] [--dtype bfloat16] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY_TOKENIZER = REPO / "tests" / "fixtures" / "molmo2-tiny" / "tokenizer.json"
CONFIG_FILES = ["config.json", "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                "generation_config.json"]


def original_weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor the original checkpoint stores, with its shape, from config.json alone."""
    t, v, a = config["text_config"], config["vit_config"], config["adapter_config"]
    hd, nh, nkv, hid = t["head_dim"], t["num_attention_heads"], t["num_key_value_heads"], t["hidden_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "lm_head.weight": (t["vocab_size"], hid),
        "model.transformer.wte.embedding": (t["vocab_size"], hid),
        "model.transformer.wte.new_embedding": (t["additional_vocab_size"], hid),
        "model.transformer.ln_f.weight": (hid,),
    }
    for n in range(t["num_hidden_layers"]):
        b = f"model.transformer.blocks.{n}."
        shapes[b + "attn_norm.weight"] = (hid,)
        shapes[b + "ff_norm.weight"] = (hid,)
        shapes[b + "self_attn.att_proj.weight"] = ((nh + 2 * nkv) * hd, hid)
        shapes[b + "self_attn.attn_out.weight"] = (hid, nh * hd)
        shapes[b + "self_attn.q_norm.weight"] = (hd,)
        shapes[b + "self_attn.k_norm.weight"] = (hd,)
        shapes[b + "mlp.ff_proj.weight"] = (2 * t["intermediate_size"], hid)
        shapes[b + "mlp.ff_out.weight"] = (hid, t["intermediate_size"])
    vb = "model.vision_backbone."
    vd, vhd, vh = v["hidden_size"], v["head_dim"], v["num_attention_heads"]
    patch = v["image_patch_size"]
    shapes[vb + "image_vit.patch_embedding.weight"] = (vd, patch * patch * 3)
    shapes[vb + "image_vit.patch_embedding.bias"] = (vd,)
    shapes[vb + "image_vit.positional_embedding"] = (v["image_num_pos"], vd)
    taps = [layer if layer >= 0 else layer + v["num_hidden_layers"] for layer in a["vit_layers"]]
    for k in range(max(taps) + 1):
        r = f"{vb}image_vit.transformer.resblocks.{k}."
        for w, rows in (("wq", vh * vhd), ("wk", v["num_key_value_heads"] * vhd), ("wv", v["num_key_value_heads"] * vhd)):
            shapes[f"{r}attention.{w}.weight"] = (rows, vd)
            shapes[f"{r}attention.{w}.bias"] = (rows,)
        shapes[r + "attention.wo.weight"] = (vd, vh * vhd)
        shapes[r + "attention.wo.bias"] = (vd,)
        for norm in ("attention_norm", "ffn_norm"):
            shapes[f"{r}{norm}.weight"] = (vd,)
            shapes[f"{r}{norm}.bias"] = (vd,)
        shapes[r + "feed_forward.w1.weight"] = (v["intermediate_size"], vd)
        shapes[r + "feed_forward.w1.bias"] = (v["intermediate_size"],)
        shapes[r + "feed_forward.w2.weight"] = (vd, v["intermediate_size"])
        shapes[r + "feed_forward.w2.bias"] = (vd,)
    pool_in = vd * len(a["vit_layers"])
    ad, ahd, ah, akv = a["hidden_size"], a["head_dim"], a["num_attention_heads"], a["num_key_value_heads"]
    for w, rows, cols in (("wq", ah * ahd, pool_in), ("wk", akv * ahd, pool_in), ("wv", akv * ahd, pool_in), ("wo", ad, ah * ahd)):
        shapes[f"{vb}image_pooling_2d.{w}.weight"] = (rows, cols)
        shapes[f"{vb}image_pooling_2d.{w}.bias"] = (rows,)
    shapes[vb + "image_projector.w1.weight"] = (a["intermediate_size"], ad)
    shapes[vb + "image_projector.w3.weight"] = (a["intermediate_size"], ad)
    shapes[vb + "image_projector.w2.weight"] = (a["text_hidden_size"], a["intermediate_size"])
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Scales that keep a random model numerically tame: unit norms, small matrices."""
    if name.endswith(("norm.weight", "ln_f.weight")) or "_norm." in name and name.endswith("weight"):
        base = torch.ones(shape, device=device)
        return (base + 0.05 * torch.randn(shape, generator=gen, device=device)).to(dtype)
    fan_in = shape[-1] if len(shape) > 1 else 1
    scale = 0.02 if len(shape) == 1 else min(0.05, fan_in**-0.5)
    if "wte" in name or "positional" in name:
        scale = 0.1
    return (scale * torch.randn(shape, generator=gen, device=device)).to(dtype)


def synthetic_tokenizer(config_dir: Path) -> dict:
    tiny = json.loads(TINY_TOKENIZER.read_text())
    special = {int(k): v for k, v in json.loads((config_dir / "tokenizer_config.json").read_text())["added_tokens_decoder"].items()}
    first_special = min(special)
    regular = {tok: i for tok, i in tiny["model"]["vocab"].items() if tok not in {a["content"] for a in tiny["added_tokens"]}}
    base = min(regular.values())
    vocab = {tok: i - base for tok, i in regular.items()}
    for i in range(len(vocab), first_special):
        vocab[f"<|unused_{i}|>"] = i
    tiny["model"]["vocab"] = vocab
    tiny["added_tokens"] = [
        {"id": i, "content": t["content"], "single_word": t.get("single_word", False), "lstrip": t.get("lstrip", False),
         "rstrip": t.get("rstrip", False), "normalized": t.get("normalized", False), "special": t.get("special", True)}
        for i, t in sorted(special.items())
    ]
    return tiny


def write_checkpoint(out: Path, config_dir: Path, dtype: str, seed: int, device: str, shard_gb: float = 4.0) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILES:
        if (config_dir / name).is_file():
            shutil.copy(config_dir / name, out / name)
    config = json.loads((config_dir / "config.json").read_text())
    config["dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "tokenizer.json").write_text(json.dumps(synthetic_tokenizer(config_dir)))
    shapes = original_weight_shapes(config)
    index = config_dir / "model.safetensors.index.json"
    if index.is_file():
        stored = set(json.loads(index.read_text())["weight_map"])
        if stored != set(shapes):
            raise SystemExit(f"weight names differ from the hub index: {sorted(stored ^ set(shapes))[:5]}")
    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(_shards(shapes, torch_dtype, shard_gb)):
        tensors = {n: random_tensor(n, shapes[n], gen, torch_dtype, device).cpu() for n in shard}
        fname = f"model-{i + 1:05d}.safetensors"
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (out / "DONE").write_text(json.dumps({"seed": seed, "dtype": dtype}))


def _shards(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, shard_gb: float) -> Iterator[list[str]]:
    size = torch.tensor([], dtype=dtype).element_size()
    shard: list[str] = []
    total = 0
    for name in sorted(shapes):
        n = size * int(torch.tensor(shapes[name]).prod()) if shapes[name] else size
        if shard and total + n > shard_gb * 2**30:
            yield shard
            shard, total = [], 0
        shard.append(name)
        total += n
    if shard:
        yield shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--config-dir", type=Path, default=HERE / "molmo2-4b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if (args.out / "DONE").is_file():
        print(f"{args.out} already holds the checkpoint")
        return
    write_checkpoint(args.out, args.config_dir, args.dtype, args.seed, args.device)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
