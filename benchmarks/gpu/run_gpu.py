"""Molmo2 at real scale on a GPU: the shim's exact model vs vLLM's native Molmo2, side by side.

Needs vLLM 0.22 (which has a native Molmo2; the shim overrides it only on the `shim` side)
and, for the reference, transformers >= 5.20 (native Molmo2) on `--reference-path`.

    python benchmarks/gpu/run_gpu.py all --ckpt /data/molmo2-4b-random --out results/

Steps (each also runs alone: checkpoint, reference, engine --side ..., report):
  checkpoint  the released Molmo2-4B config with random bf16 weights in the original key
              names, written once and reused (identical weights for every engine);
  reference   transformers' native Molmo2 in float32 on the GPU (the stand-in for the
              original; it matches the original's math, see docs/benchmarks.md), fed the
              shim's processor outputs (bit-identical to the original processor's);
  engine      vLLM with its defaults (bf16, torch.compile, CUDA graphs) on one side:
                shim    the shim's exact model (MOLMO2_SHIM_OVERRIDE_NATIVE=1);
                hub     vLLM's native Molmo2 with the hub's own processor (remote code next to
                        the checkpoint, molmo2-shim not importable): what a user runs without us;
                native  vLLM's native Molmo2 with the shim's processor (the shim stands down);
              parity log-probs on five prompts (two of them short enough to replay captured
              piecewise CUDA graphs), then `--rounds` rounds of: 32 requests with new images,
              32 text requests, single-stream decode; with --memory-check a full batch of image
              prompts after profiling; --dtype, --quantization, --cudagraph-mode,
              --attention-backend and --attention-config (JSON) vary the setup; --turns/--turn
              let two engine runs (e.g. shim and hub on one GPU,
              --gpu-share 0.42 each) take turns, so that neither runs while the other is timed;
  kernels     the exact prefill's two extra costs timed alone (benchmarks/gpu/kernels.py);
  report      every engine against the reference, and the throughput ratios with their spread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
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
    # Short prefills: replayed from captured piecewise CUDA graphs (at most 512 tokens).
    "image_378": ("<|image|>" + TEXT, [(378, 378, 4)]),
    "video": ("<|video|>" + TEXT, "video"),
}
VIDEO = (4, 320, 240, 5)  # frames, width, height, seed
TOP = 20


def images_for(spec: Any) -> list[Any]:
    import golden

    if spec == "video":
        return []
    return [golden.pil_image("rgb", w, h, seed) for w, h, seed in spec]


def video_for(spec: Any) -> Any:
    import golden

    if spec != "video":
        return None
    frames, w, h, seed = VIDEO
    # Complete metadata: vLLM's native Molmo2 requires total_num_frames.
    return golden.synth_video(frames, w, h, seed), {"fps": 2.0, "frames_indices": list(range(frames)),
                                                    "total_num_frames": frames, "duration": frames / 2.0}


def mm_data(spec: Any) -> dict[str, Any] | None:
    video = video_for(spec)
    if video is not None:
        return {"video": video}
    images = images_for(spec)
    return {"image": images} if images else None


# -- reference ------------------------------------------------------------------------------

def reference(ckpt: Path, out: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from molmo2_shim.verl import actor_inputs, collate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=torch.float32).to(device).eval()
    proc_dir = str(ckpt)
    results = {}
    for name, (prompt, spec) in PARITY.items():
        from molmo2_shim.verl import processor_of

        ids = processor_of(proc_dir).tokenize(prompt)
        video = video_for(spec)
        example = actor_inputs(proc_dir, ids, images_for(spec) or None, videos=[video] if video else None)
        # transformers' native model wants pooling indices offset across images (native=True).
        batch = {k: v.to(device) for k, v in collate([example], 0, native=True).items()}
        with torch.no_grad():
            logits = model(**batch).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        ids_t = batch["input_ids"][0]
        nxt = ids_t[1:]
        # Image special tokens lie past the head: -inf, as the shim reports them.
        token_lp = torch.full(nxt.shape, float("-inf"), device=device)
        inside = nxt < logprobs.shape[-1]
        token_lp[inside] = logprobs[:-1][inside].gather(1, nxt[inside][:, None])[:, 0]
        results[name] = {
            "ids": ids_t.tolist(),
            "token_logprobs": token_lp.tolist(),
            "last": logprobs[-1].cpu().numpy().astype(np.float32).tolist(),
        }
    (out / "reference.json").write_text(json.dumps(results))


# -- engines --------------------------------------------------------------------------------

def hub_checkpoint(ckpt: Path, remote_code: Path, out: Path) -> Path:
    """The checkpoint with the hub's remote code next to its config (links, nothing copied)."""
    if not any(remote_code.glob("modeling_*.py")):
        raise SystemExit(f"hub side: no remote code in {remote_code} (the hub's five .py files; see --remote-code)")
    hub = out / (ckpt.name + "-hub")
    hub.mkdir(exist_ok=True)
    for src in [*ckpt.iterdir(), *remote_code.glob("*.py")]:
        link = hub / src.name
        if not link.exists():
            link.symlink_to(src.resolve())
    return hub


class Turns:
    """Two engine processes (two sides) taking turns: each side's start-up and each timed segment
    runs while the other side waits, so neither competes with the other for the host's CPUs or a
    shared GPU, and the two sides' rounds interleave in time (drift on the host hits both alike).

    `folder` holds one counter file both sides see; side `me` (0 or 1) goes when the counter is
    even (0) or odd (1), and passes the turn on by incrementing it. Both sides must take the same
    number of turns. Without a folder every turn is taken at once (a side running alone).
    """

    def __init__(self, folder: Path | None, me: int, timeout_s: float = 1200.0) -> None:
        self.counter = folder / "turn" if folder else None
        self.me, self.timeout_s = me, timeout_s

    def _read(self) -> int:
        assert self.counter is not None
        try:
            return int(self.counter.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self.counter is None:
            yield
            return
        deadline = time.monotonic() + self.timeout_s
        while (n := self._read()) % 2 != self.me:
            if time.monotonic() > deadline:
                raise TimeoutError(f"side {self.me}: the other side did not pass the turn ({self.counter} = {n})")
            time.sleep(0.02)
        try:
            yield
        finally:
            tmp = self.counter.with_suffix(f".{self.me}")
            tmp.write_text(str(n + 1))
            tmp.replace(self.counter)  # atomic: the other side never reads a partial number


# A side running alone: every turn is taken at once.
ALONE = Turns(None, 0)


def engine(ckpt: Path, out: Path, side: str, tp: int, quick: bool = False, *, rounds: int = 3, dtype: str = "bfloat16",
           quantization: str | None = None, cudagraph_mode: str | None = None, memory_check: bool = False,
           remote_code: Path | None = None, label: str | None = None, profile: str | None = None,
           gpu_share: float | None = None, turns: Turns = ALONE, attention_backend: str | None = None,
           attention_config: dict[str, Any] | None = None) -> None:
    import importlib.util

    kw: dict[str, Any] = {}
    model = ckpt
    if side == "shim":
        os.environ["MOLMO2_SHIM_OVERRIDE_NATIVE"] = "1"
    if side == "hub":
        # What a user runs without us: vLLM's native Molmo2 with the hub's processor (remote
        # code). The shim's entry point is switched off in every process vLLM starts (on the GPU
        # host it is not even on the path: benchmarks/gpu/session.sh).
        os.environ["MOLMO2_SHIM_DISABLE"] = "1"
        os.environ["VLLM_PLUGINS"] = "cpu_hint" if importlib.util.find_spec("vllm_cpu_platform_hint") else ""
        model = hub_checkpoint(ckpt, remote_code or REPO / ".remote", out)
        kw["trust_remote_code"] = True
        status = "no shim" + (" (installed, disabled)" if importlib.util.find_spec("molmo2_shim") else "")
    else:
        import molmo2_shim

        status = molmo2_shim.install().action
    from vllm import LLM, SamplingParams

    if memory_check:
        os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a function (peak memory)
    if quick:
        # On the CPU backend this is the share of host memory vLLM insists is free at start.
        kw.update(enforce_eager=True, dtype="float32", gpu_memory_utilization=0.4)
    else:
        kw.update(dtype=dtype, gpu_memory_utilization=gpu_share or (0.9 if memory_check else 0.85))
    if quantization:
        kw["quantization"] = quantization
    if cudagraph_mode:
        kw["compilation_config"] = {"cudagraph_mode": cudagraph_mode}
    if attention_backend:
        kw["attention_backend"] = attention_backend
    if attention_config:
        kw["attention_config"] = attention_config
    engine_name = label or (side if tp == 1 else f"{side}-tp{tp}")
    if profile:
        # torch profiler in the engine's workers; rank 0 writes a kernel table (profiler_out_0.txt)
        kw["profiler_config"] = {"profiler": "torch", "torch_profiler_dir": str(out.resolve() / f"profile_{engine_name}"),
                                 "torch_profiler_with_stack": False, "ignore_frontend": True}
    # Start-up and parity in this side's turn: vLLM sizes its KV cache from the free GPU memory
    # it measures, which the other engine must not change meanwhile.
    with turns.take():
        start = time.perf_counter()
        llm = LLM(model=str(model), max_model_len=4096 if quick else 8192, max_num_batched_tokens=8192,
                  limit_mm_per_prompt={"image": 2, "video": 1}, max_logprobs=TOP, tensor_parallel_size=tp, seed=0, **kw)
        startup = time.perf_counter() - start
        if side == "hub":
            assert "molmo2_shim" not in sys.modules, "hub side: molmo2-shim was imported"
        cc = llm.llm_engine.vllm_config.compilation_config
        result: dict[str, Any] = {"side": side, "label": engine_name, "variant": label is not None, "status": status, "startup_s": startup, "tp": tp,
                                  "dtype": "float32" if quick else dtype, "quantization": quantization, "cudagraph_mode_requested": cudagraph_mode,
                                  "cudagraph_mode": str(getattr(cc, "cudagraph_mode", None)), "attention_backend": attention_backend,
                                  "attention_config": attention_config,
                                  "parity": {}}
        for name, (prompt, spec) in PARITY.items():
            # vLLM's native Molmo2 crashes on prompt logprobs of image prompts (ids past its head).
            prompt_lp = 0 if side == "shim" or spec == [] else None
            request: dict[str, Any] = {"prompt": prompt}
            data = mm_data(spec)
            if data:
                request["multi_modal_data"] = data
            o = llm.generate([request], SamplingParams(temperature=0, max_tokens=1, logprobs=TOP, prompt_logprobs=prompt_lp),
                             use_tqdm=False)[0]
            entry: dict[str, Any] = {"ids": list(o.prompt_token_ids),
                                     "last_top": {str(t): lp.logprob for t, lp in o.outputs[0].logprobs[0].items()}}
            if o.prompt_logprobs:
                entry["token_logprobs"] = [d[t].logprob for d, t in zip(o.prompt_logprobs[1:], o.prompt_token_ids[1:])]
            result["parity"][name] = entry
    if memory_check:
        result["memory"] = memory(llm)
    if rounds:
        result["throughput"] = (throughput(llm, 4, 16, rounds=1, turns=turns) if quick
                                else throughput(llm, rounds=rounds, turns=turns))
    if profile:
        # Under the profiler: one prefill of the image batch (new images), or a text batch
        # decoding 32 tokens.
        from vllm import SamplingParams

        n = 4 if quick else 32
        if profile == "image":
            batch, tokens = image_requests(n, 640, 480, 90000), 1
        else:
            batch, tokens = [{"prompt": TEXT.replace("detail", f"detail, profiled {i},")} for i in range(n)], 32
        with turns.take():
            llm.start_profile()
            llm.generate(batch, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True), use_tqdm=False)
            llm.stop_profile()
    (out / f"engine_{engine_name}.json").write_text(json.dumps(result))


def image_requests(n: int, width: int, height: int, first_seed: int) -> list[dict]:
    """n image prompts, each with an image of its own (no cache of any kind can hit)."""
    import golden

    return [{"prompt": "<|image|>" + TEXT, "multi_modal_data": {"image": [golden.distinct_image(width, height, first_seed + i)]}}
            for i in range(n)]


def _peak_gib(worker: Any) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def memory(llm: Any, batch: int = 256) -> dict[str, Any]:
    """Peak GPU memory after profiling (what vLLM sized the KV cache against) and after a full
    batch of image prompts: the recomputation's buffers must stay inside the profiled peak."""
    from vllm import SamplingParams

    after_profile = max(llm.collective_rpc(_peak_gib))
    llm.generate(image_requests(batch, 1280, 960, 7000), SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)
    after_batch = max(llm.collective_rpc(_peak_gib))
    return {"peak_after_profile_gib": after_profile, "peak_after_image_batch_gib": after_batch, "batch": batch,
            "within_profile": after_batch <= after_profile + 1e-3}


def throughput(llm: Any, batch: int = 32, tokens: int = 128, rounds: int = 3,
               turns: Turns = ALONE) -> dict[str, list[float]]:
    """Per round: a batch of new images, a text batch, single-stream decode (each round uses fresh
    prompts and images: nothing comes from the prefix cache or the processor cache). Each timed
    call is one turn (`turns`: another engine alternating with this one)."""
    from vllm import SamplingParams

    def timed(requests: list[dict], tokens: int) -> float:
        params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        with turns.take():
            start = time.perf_counter()
            llm.generate(requests, params, use_tqdm=False)
            return time.perf_counter() - start

    def image_batch(round_: int) -> list[dict]:
        return image_requests(batch, 640, 480, 1000 * round_)

    def text_batch(round_: int) -> list[dict]:
        return [{"prompt": TEXT.replace("detail", f"detail, part {round_}.{i},")} for i in range(batch)]

    timed(image_batch(0)[:2] + text_batch(0)[:2], 8)  # warm-up
    out: dict[str, list[float]] = {f"image_batch{batch}_tok_s": [], f"image_prefill{batch}_req_s": [],
                                   f"text_batch{batch}_tok_s": [], f"text_batch{batch}_decode_tok_s": [],
                                   "single_stream_decode_tok_s": []}
    for round_ in range(1, rounds + 1):
        llm.reset_prefix_cache()
        out[f"image_batch{batch}_tok_s"].append(batch * tokens / timed(image_batch(round_), tokens))
        # The same work up to the first token (processor, ViT, prefill) on other new images.
        out[f"image_prefill{batch}_req_s"].append(batch / timed(image_batch(round_ + 500), 1))
        whole = timed(text_batch(round_), tokens)
        out[f"text_batch{batch}_tok_s"].append(batch * tokens / whole)
        # Its decode steps alone: the whole batch less a prefill of other prompts of the same length.
        out[f"text_batch{batch}_decode_tok_s"].append(batch * (tokens - 1) / (whole - timed(text_batch(round_ + 500), 1)))
        single = [{"prompt": TEXT.replace("detail", f"detail ({round_})")}]
        first, full = timed(single, 1), timed(single, 128)
        out["single_stream_decode_tok_s"].append(127 / (full - first))
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


def _ratio_summary(a: list[float], b: list[float], faster_is_lower: bool = False) -> dict[str, float]:
    """Per-round ratios (round i of one side over round i of the other): median and range."""
    ratios = [(y / x if faster_is_lower else x / y) for x, y in zip(a, b)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


def report(out: Path, device: str, checkpoint: str) -> None:
    ref = json.loads((out / "reference.json").read_text())
    engines = {p.stem[len("engine_"):]: json.loads(p.read_text()) for p in sorted(out.glob("engine_*.json"))}
    results: dict[str, Any] = {"device": device, "parity": {}, "throughput": {}, "ratios": {},
                               "engines": {k: {x: e.get(x) for x in ("side", "tp", "dtype", "quantization",
                                                                     "cudagraph_mode_requested", "cudagraph_mode",
                                                                     "startup_s", "memory", "attention_backend", "attention_config")}
                                           for k, e in engines.items()}}
    for name in PARITY:
        results["parity"][name] = {k: compare(e["parity"][name], ref[name]) for k, e in engines.items()
                                   if name in e["parity"]}
    lines = [f"# Molmo2 checkpoint {checkpoint} on {device}", "",
             "Log-prob deviation from transformers' native Molmo2 in float32 (the reference):", "",
             "| prompt | engine | ids equal | last position, top-20 max \\|Δ\\| | whole prompt max \\|Δ\\| | mean \\|Δ\\| |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    for name, per_engine in results["parity"].items():
        for label, c in per_engine.items():
            lines.append(f"| {name} | {label} | {bool(c['ids_equal'])} | {fmt(c['last_top_max_abs'])} | "
                         f"{fmt(c['prompt_max_abs'])} | {fmt(c['prompt_mean_abs'])} |")
    lines += ["", "Engines:", ""]
    for label, e in results["engines"].items():
        backend = (e.get("attention_backend") or "vLLM's choice") + (f" {e['attention_config']}" if e.get("attention_config") else "")
        lines.append(f"- {label}: side {e['side']}, TP {e['tp']}, {e['dtype']}, quantization {e['quantization']}, "
                     f"CUDA graphs {e['cudagraph_mode']} (requested {e['cudagraph_mode_requested']}), "
                     f"attention backend {backend}, "
                     f"startup {e['startup_s']:.0f} s" + (f", memory {e['memory']}" if e.get("memory") else ""))
    with_tp = {label: e for label, e in engines.items() if e.get("throughput")}
    for label, e in with_tp.items():
        results["throughput"][label] = e["throughput"]
    lines += ["", "| metric | TP | A: shim | B: hub | C: native | A/B median [range] | A/C median [range] |",
              "|---|---|---|---|---|---|---|"]
    for tp in sorted({e["tp"] for e in with_tp.values()}):
        side = {e["side"]: e for e in with_tp.values() if e["tp"] == tp and not e.get("variant")}
        if "shim" not in side:
            continue
        for metric, a in side["shim"]["throughput"].items():
            cells, ratios = [], []
            for other in ("hub", "native"):
                b = side.get(other, {}).get("throughput", {}).get(metric)
                cells.append(f"{statistics.median(b):.1f}" if b else "n/a")
                if b:
                    r = _ratio_summary(a, b)
                    results["ratios"][f"tp{tp}/{metric}/shim_over_{other}"] = r
                    ratios.append(f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]")
                else:
                    ratios.append("n/a")
            lines.append(f"| {metric} | {tp} | {statistics.median(a):.1f} | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} |")
    defaults = {e["tp"]: e for e in with_tp.values() if e["side"] == "shim" and not e.get("variant")}
    variants = {label: e for label, e in with_tp.items() if e["side"] == "shim" and e.get("variant") and e["tp"] in defaults}
    if variants:
        lines += ["", "Variants of the shim side against its default (same TP, same session):", "",
                  "| variant | metric | variant | shim | variant / shim median [range] |", "|---|---|---|---|---|"]
        for label, e in variants.items():
            base = defaults[e["tp"]]
            for metric, a in e["throughput"].items():
                b = base["throughput"].get(metric)
                if b:
                    r = _ratio_summary(a, b)
                    results["ratios"][f"tp{e['tp']}/{metric}/{label}_over_shim"] = r
                    lines.append(f"| {label} | {metric} | {statistics.median(a):.1f} | {statistics.median(b):.1f} | "
                                 f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}] |")
    # A variant run on both sides (e.g. shim-fp8 and hub-fp8): the same A/B comparison for it.
    pairs = [(label, "hub" + label[len("shim"):]) for label in variants if "hub" + label[len("shim"):] in with_tp]
    if pairs:
        lines += ["", "Variants run on both sides (same TP, same session):", "",
                  "| variant | metric | A: shim | B: hub | A/B median [range] |", "|---|---|---|---|---|"]
        for label, hub_label in pairs:
            for metric, a in with_tp[label]["throughput"].items():
                b = with_tp[hub_label]["throughput"].get(metric)
                if b:
                    r = _ratio_summary(a, b)
                    results["ratios"][f"tp{with_tp[label]['tp']}/{metric}/{label}_over_{hub_label}"] = r
                    lines.append(f"| {label[len('shim-'):]} | {metric} | {statistics.median(a):.1f} | {statistics.median(b):.1f} | "
                                 f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}] |")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["all", "checkpoint", "reference", "engine", "kernels", "report"])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--side", choices=["shim", "hub", "native"])
    ap.add_argument("--label", help="name of this engine's results (default: the side)")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (0: parity only)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--quantization")
    ap.add_argument("--cudagraph-mode", help="request a CUDA graph mode (the shim may replace it, and says so)")
    ap.add_argument("--memory-check", action="store_true", help="gpu_memory_utilization 0.9 and a full image batch")
    ap.add_argument("--profile", choices=["image", "text"],
                    help="torch profiler over one image-batch prefill or 32 decode steps of a text batch (profile_LABEL/)")
    ap.add_argument("--attention-backend", help="vLLM's attention_backend for the text model (default: vLLM's choice)")
    ap.add_argument("--attention-config", type=json.loads,
                    help='vLLM\'s attention_config as JSON, e.g. \'{"flash_attn_max_num_splits_for_cuda_graph": 1}\'')
    ap.add_argument("--gpu-share", type=float, help="gpu_memory_utilization (two engines on one GPU: 0.42 each)")
    ap.add_argument("--turns", type=Path, help="a folder shared with another engine run: take turns with it (class Turns)")
    ap.add_argument("--turn", type=int, choices=[0, 1], default=0, help="this side's turn with --turns (0 goes first)")
    ap.add_argument("--remote-code", type=Path, default=REPO / ".remote", help="the hub's five .py files (hub side)")
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
        engine(args.ckpt, args.out, args.side, args.tp, args.quick, rounds=args.rounds, dtype=args.dtype,
               quantization=args.quantization, cudagraph_mode=args.cudagraph_mode, memory_check=args.memory_check,
               remote_code=args.remote_code, label=args.label, profile=args.profile, gpu_share=args.gpu_share,
               turns=Turns(args.turns, args.turn) if args.turns else ALONE, attention_backend=args.attention_backend,
               attention_config=args.attention_config)
    elif args.step == "kernels":
        import kernels

        kernels.run(args.ckpt, args.out, tp=args.tp)
    elif args.step == "report":
        import torch

        report(args.out, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", args.ckpt.name)
    else:
        me = [sys.executable, __file__, "--ckpt", str(args.ckpt), "--out", str(args.out), "--tp", str(args.tp),
              "--rounds", str(args.rounds), *(["--quick"] if args.quick else [])]
        ref_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (args.reference_path, str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        for step, extra, env in [("checkpoint", [], None), ("reference", [], ref_env),
                                 ("engine", ["--side", "shim"], None), ("engine", ["--side", "native"], None),
                                 ("report", [], None)]:
            print(f"== {step} {' '.join(extra)}", flush=True)
            subprocess.run([*me[:2], step, *me[2:], *extra], check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
