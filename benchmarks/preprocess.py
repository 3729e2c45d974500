"""Image preprocessing speed: molmo2-shim's processor vs the ORIGINAL hub processor, side by side.

    $(make python) benchmarks/preprocess.py                 # vLLM 0.11.2 test env (transformers 4.57)
    $(make python) benchmarks/preprocess.py --shim-threads 1,2 --profile
    $(make python) benchmarks/preprocess.py --rl-batch 256 [--rollout 64]
    $(make python) benchmarks/preprocess.py --smoke         # CI: two sizes, one round

The original is the hub's remote code (processing_molmo2.py & co.), loaded with
trust_remote_code next to a temporary copy of the tiny checkpoint, from
`../shared/reference/molmo2-4b-remote` next to the repository (or --reference /
MOLMO2_SHIM_REFERENCE_CODE). It needs transformers 4.57; where it is missing or cannot load,
the original side is skipped with a message and only the shim is timed.

Each call is the full processor call: one chat prompt with one `<|image|>` and one PIL image
in, model inputs out (input ids, token types, pixel values, pooling indices, grids). Both
processors run in this one process with the same torch thread count (--threads, default 2),
interleaved call by call in every round (the order flips each round), so the ratio is robust
to this machine's noise; absolute times are context only. Before timing, every output of the
two is compared bit for bit (dtype, shape and bytes of every tensor).

--rl-batch N pushes N prompts with one new 640x480 image each through vLLM's own per-request
input path (the engine's input Processor, `process_inputs`: tokenization, multimodal hashing
and the shim's processor, as LLM.generate and the API server run it for every request) without
running the model, and reports images/s. --rollout N also runs LLM.generate on N such prompts
with the tiny model and reports what share of that wall time the preprocessing is.
"""

from __future__ import annotations

import sys

# vLLM's CPU environment ships intel_extension_for_pytorch, whose import swaps CPU kernels
# (tools/make_lora_fixtures.py): keep both sides on stock torch kernels.
sys.modules["intel_extension_for_pytorch"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import golden  # noqa: E402
from molmo2_shim.processing.image import THREADS_ENV, processor_threads  # noqa: E402
from molmo2_shim.processing.processor import Molmo2Processor  # noqa: E402

SIZES = [(640, 480), (480, 640), (1024, 768), (1920, 1080), (378, 378), (1280, 720), (100, 2000), (2000, 100)]
REMOTE_FILES = ("configuration_molmo2.py", "modeling_molmo2.py", "image_processing_molmo2.py",
                "processing_molmo2.py", "video_processing_molmo2.py")
SEED = 11


# -- the two processors ----------------------------------------------------------------------


def reference_dir(flag: str | None) -> Path:
    return Path(flag or os.environ.get("MOLMO2_SHIM_REFERENCE_CODE") or REPO.parent / "shared" / "reference" / "molmo2-4b-remote")


def load_original(ref: Path, workdir: Path) -> tuple[Any, str]:
    """The hub processor next to a copy of the tiny checkpoint, or (None, why not)."""
    missing = [f for f in REMOTE_FILES if not (ref / f).is_file()]
    if missing:
        return None, f"the original remote code is not at {ref} (missing {', '.join(missing)}); pass --reference"
    try:
        import transformers
        from transformers import AutoProcessor

        target = workdir / "molmo2-original"
        shutil.copytree(golden.CHECKPOINT, target)
        for name in REMOTE_FILES:
            shutil.copy(ref / name, target / name)
        proc = AutoProcessor.from_pretrained(str(target), trust_remote_code=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load means: no original side
        return None, f"the original processor does not load here (transformers {transformers.__version__}: {type(exc).__name__}: {exc})"
    return proc, ""


def chat_prompt(shim: Molmo2Processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    return shim.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def differences(a: Any, b: Any) -> list[str]:
    """Keys whose tensors differ in dtype, shape or any byte (empty: bit-identical)."""
    out = []
    if set(a) != set(b):
        out.append(f"keys {sorted(set(a) ^ set(b))}")
    for k in sorted(set(a) & set(b)):
        x, y = torch.as_tensor(a[k]), torch.as_tensor(b[k])
        if x.dtype != y.dtype or x.shape != y.shape or x.contiguous().numpy().tobytes() != y.contiguous().numpy().tobytes():
            out.append(k)
    return out


def with_threads_env(value: str | None) -> None:
    if value is None:
        os.environ.pop(THREADS_ENV, None)
    else:
        os.environ[THREADS_ENV] = value


# -- side-by-side timing -----------------------------------------------------------------------


def time_sizes(shim: Molmo2Processor, orig: Any, prompt: str, sizes: list[tuple[int, int]], rounds: int,
               variants: list[str | None]) -> list[dict[str, Any]]:
    images = {s: golden.pil_image("rgb", s[0], s[1], SEED) for s in sizes}
    rows = []
    for size, image in images.items():
        with_threads_env(variants[0])
        s_out = shim(text=prompt, images=[image], return_tensors="pt")
        row: dict[str, Any] = {"size": f"{size[0]}x{size[1]}", "crops": int(s_out["pixel_values"].shape[0]),
                               "tokens": int(s_out["input_ids"].shape[1]), "shim_s": {str(v): [] for v in variants}, "orig_s": []}
        if orig is not None:
            o_out = orig(text=prompt, images=[image], return_tensors="pt")
            row["differs"] = differences(o_out, s_out)
            for v in variants[1:]:  # the thread bound must not change a bit
                with_threads_env(v)
                row["differs"] += [f"{k} (shim threads {v})" for k in differences(o_out, shim(text=prompt, images=[image], return_tensors="pt"))]
        rows.append(row)
    calls = []
    for size, row in zip(images, rows):
        for v in variants:
            calls.append((row["shim_s"][str(v)], v, lambda im=images[size]: shim(text=prompt, images=[im], return_tensors="pt")))
        if orig is not None:
            calls.append((row["orig_s"], None, lambda im=images[size]: orig(text=prompt, images=[im], return_tensors="pt")))
    for r in range(rounds):
        for sink, v, call in (calls if r % 2 == 0 else calls[::-1]):
            with_threads_env(v)
            start = time.perf_counter()
            call()
            sink.append(time.perf_counter() - start)
    with_threads_env(variants[0])
    return rows


def decode_ms(size: tuple[int, int], repeats: int) -> float:
    """PIL decode + RGB conversion of a quality-90 JPEG of this size (not part of either call)."""
    from PIL import Image

    buf = io.BytesIO()
    golden.pil_image("rgb", size[0], size[1], SEED).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        Image.open(io.BytesIO(data)).convert("RGB")
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def report(rows: list[dict[str, Any]], variants: list[str | None], has_orig: bool, decode: dict[str, float]) -> dict[str, Any]:
    names = [f"shim t={v or processor_threads()}" for v in variants]
    head = f"{'image':>10} {'crops':>5} {'tokens':>6} {'jpeg dec':>8}"
    head += "".join(f" {n + ' ms':>12}" for n in names)
    if has_orig:
        head += f" {'orig ms':>9}" + "".join(f" {'x (' + n + ')':>15} {'round spread':>13}" for n in names) + "  bit-identical"
    print(head)
    summary: dict[str, Any] = {"rows": []}
    for row in rows:
        med = {v: statistics.median(row["shim_s"][str(v)]) for v in variants}
        line = f"{row['size']:>10} {row['crops']:>5} {row['tokens']:>6} {decode[row['size']]:>8.2f}"
        line += "".join(f" {med[v] * 1e3:>12.2f}" for v in variants)
        entry = {"size": row["size"], "crops": row["crops"], "tokens": row["tokens"], "jpeg_decode_ms": decode[row["size"]],
                 "shim_ms": {n: med[v] * 1e3 for n, v in zip(names, variants)}}
        if has_orig:
            o = statistics.median(row["orig_s"])
            line += f" {o * 1e3:>9.2f}"
            entry["original_ms"] = o * 1e3
            entry["speedup"] = {}
            for n, v in zip(names, variants):
                per_round = sorted(a / b for a, b in zip(row["orig_s"], row["shim_s"][str(v)]))
                lo, hi = per_round[len(per_round) // 4], per_round[(3 * len(per_round)) // 4]
                line += f" {o / med[v]:>14.2f}x {lo:>5.2f}-{hi:<5.2f}x"
                entry["speedup"][n] = {"median_ratio": o / med[v], "round_ratio_p25": lo, "round_ratio_p75": hi}
            same = not row["differs"]
            line += f"  {'yes' if same else 'NO: ' + ', '.join(row['differs'])}"
            entry["bit_identical"] = same
        print(line)
        summary["rows"].append(entry)
    if has_orig:
        total_o = sum(statistics.median(r["orig_s"]) for r in rows)
        for n, v in zip(names, variants):
            total_s = sum(statistics.median(r["shim_s"][str(v)]) for r in rows)
            print(f"over the set ({n}): original {total_o * 1e3:.1f} ms, shim {total_s * 1e3:.1f} ms per image round: "
                  f"{total_o / total_s:.2f}x images/s")
            summary.setdefault("overall", {})[n] = total_o / total_s
    return summary


# -- profile -------------------------------------------------------------------------------------

# Stages, by the functions whose cumulative time they are (per side); "other" is the rest of the call.
STAGES = {
    "original": [
        ("image to array (convert_to_rgb, to_numpy_array)", ["convert_to_rgb", "to_numpy_array"]),
        ("resize: torch bilinear kernel", ["upsample_bilinear2d"]),
        ("resize: torchvision + dtype round trips around it", ["resize_image"]),
        ("normalise (numpy, in place)", ["normalize_image"]),
        ("tiling + pooling indices (select_tiling, arange_for_pooling)", ["select_tiling", "arange_for_pooling"]),
        ("patchify (batch_pixels_to_patches)", ["batch_pixels_to_patches"]),
        ("prompt building (get_image_tokens, string replace)", ["get_image_tokens"]),
        ("tokenization (tokenizer call)", ["_batch_encode_plus"]),
        ("tensor conversion (BatchFeature)", ["convert_to_tensors"]),
    ],
    "shim": [
        ("image to array (PIL -> uint8 tensor)", ["image_to_tensor"]),
        ("resize: torch bilinear kernel", ["upsample_bilinear2d"]),
        ("resize + round/scale/mean/std + crops (one pass each)", ["crops_into"]),
        ("tiling + pooling indices (cached per size)", ["image_tiling", "pooling_layout"]),
        ("prompt building (image_tokens)", ["image_tokens"]),
        ("tokenization (tokenizer call)", ["_batch_encode_plus"]),
        ("tensor conversion (BatchFeature)", ["convert_to_tensors"]),
    ],
}


def profile(side: str, call: Any, calls: int) -> list[tuple[str, float]]:
    call()
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    for _ in range(calls):
        call()
    prof.disable()
    wall = time.perf_counter() - start
    cum: dict[str, float] = {}
    for (_, _, name), (_, _, _, ct, _) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        if name.startswith("<method '"):
            key = name.split("'")[1]
        elif name.startswith("<built-in method "):
            key = name[len("<built-in method "):].rstrip(">").split(".")[-1]
        else:
            key = name
        cum[key] = cum.get(key, 0.0) + ct
    out = [(label, sum(cum.get(f, 0.0) for f in funcs) / calls * 1e3) for label, funcs in STAGES[side]]
    out.append(("whole call (under the profiler)", wall / calls * 1e3))
    return out


def run_profile(shim: Molmo2Processor, orig: Any, prompt: str, size: tuple[int, int], calls: int) -> dict[str, Any]:
    image = golden.pil_image("rgb", size[0], size[1], SEED)
    result = {}
    sides = [("shim", shim)] + ([("original", orig)] if orig is not None else [])
    for side, proc in sides:
        stages = profile(side, lambda p=proc: p(text=prompt, images=[image], return_tensors="pt"), calls)
        print(f"profile, {side}, {size[0]}x{size[1]}, ms per call (cProfile cumulative times; nested stages overlap):")
        for label, ms in stages:
            print(f"  {ms:>8.2f}  {label}")
        result[side] = dict(stages)
    return result


# -- vLLM's per-request path ---------------------------------------------------------------------


def vllm_input_processor(max_model_len: int) -> Any:
    from vllm.engine.arg_utils import EngineArgs

    import molmo2_shim

    molmo2_shim.install()
    args = EngineArgs(model=str(golden.CHECKPOINT), dtype="float32", max_model_len=max_model_len,
                      limit_mm_per_prompt={"image": 1, "video": 0}, enforce_eager=True)
    config = args.create_engine_config()
    try:
        from vllm.transformers_utils.tokenizer import init_tokenizer_from_configs

        tokenizer = init_tokenizer_from_configs(config.model_config)
    except ImportError:  # newer vLLM: the input processor builds its own
        tokenizer = None
    try:
        from vllm.v1.engine.processor import Processor  # 0.11
    except ImportError:
        from vllm.v1.engine.input_processor import InputProcessor as Processor  # 0.12+
    return Processor(config, tokenizer) if tokenizer is not None else Processor(config)


def rl_batch(shim: Molmo2Processor, orig: Any, prompt: str, n: int, rollout: int) -> dict[str, Any]:
    from vllm import SamplingParams

    proc = vllm_input_processor(4096)
    params = SamplingParams(max_tokens=8)
    warm = golden.pil_image("rgb", 640, 480, 999)
    proc.process_inputs("warm", {"prompt": prompt, "multi_modal_data": {"image": warm}}, params)

    def through_vllm(images: list[Any], tag: str) -> float:
        start = time.perf_counter()
        for i, im in enumerate(images):
            proc.process_inputs(f"{tag}-{i}", {"prompt": prompt, "multi_modal_data": {"image": im}}, params)
        return time.perf_counter() - start

    def direct(p: Any, images: list[Any]) -> float:
        start = time.perf_counter()
        for im in images:
            p(text=prompt, images=[im], return_tensors="pt")
        return time.perf_counter() - start

    out: dict[str, Any] = {"images": n, "torch_threads": torch.get_num_threads()}
    runs: dict[str, list[float]] = {"vllm_path_shim": [], "direct_shim": [], "direct_original": []}
    for rep in range(2):
        # New images in every pass: vLLM's processor cache (keyed by content) never hits, as in RL.
        images = [golden.distinct_image(640, 480, 1000 + rep * n + i) for i in range(n)]
        runs["vllm_path_shim"].append(through_vllm(images, f"p{rep}"))
        runs["direct_shim"].append(direct(shim, images))
        if orig is not None:
            runs["direct_original"].append(direct(orig, images))
    print(f"RL batch: {n} prompts x one new 640x480 image (torch threads {torch.get_num_threads()}), best of 2 passes:")
    for key, label in [("vllm_path_shim", "vLLM 0.11 input path (Processor.process_inputs) with the shim"),
                       ("direct_shim", "shim processor call"), ("direct_original", "original processor call")]:
        if runs[key]:
            best = min(runs[key])
            out[key] = {"seconds": best, "images_per_s": n / best}
            print(f"  {n / best:>8.1f} images/s  {best:>7.2f} s  {label}")
    stats = proc.stat_mm_cache() if hasattr(proc, "stat_mm_cache") else None
    if stats is not None:
        print(f"  vLLM processor cache: {stats}")
    if rollout:
        out["rollout"] = measure_rollout(prompt, rollout, out["vllm_path_shim"]["images_per_s"])
    return out


def measure_rollout(prompt: str, n: int, images_per_s: float) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(golden.CHECKPOINT), dtype="float32", max_model_len=4096, enforce_eager=True,
              limit_mm_per_prompt={"image": 1, "video": 0}, mm_processor_cache_gb=0)
    images = [golden.distinct_image(640, 480, 5000 + i) for i in range(n)]
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=0, ignore_eos=True)
    llm.generate([{"prompt": prompt, "multi_modal_data": {"image": images[0]}}], params, use_tqdm=False)
    start = time.perf_counter()
    llm.generate([{"prompt": prompt, "multi_modal_data": {"image": im}} for im in images], params, use_tqdm=False)
    wall = time.perf_counter() - start
    share = (n / images_per_s) / wall
    print(f"rollout: {n} prompts x 16 sampled tokens on the tiny model: {wall:.2f} s wall; preprocessing at the "
          f"measured rate is {n / images_per_s:.2f} s = {share * 100:.1f}% of it")
    return {"prompts": n, "wall_s": wall, "preprocess_s": n / images_per_s, "share": share}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the process (both sides)")
    ap.add_argument("--shim-threads", default="",
                    help=f"comma list of {THREADS_ENV} values to time the shim with (default: unset, i.e. {processor_threads()})")
    ap.add_argument("--reference", help="folder with the original's five remote-code files")
    ap.add_argument("--profile", action="store_true", help="also profile one 640x480 call of each side, by stage")
    ap.add_argument("--rl-batch", type=int, default=0, metavar="N", help="N prompts through vLLM's input path")
    ap.add_argument("--rollout", type=int, default=0, metavar="N", help="with --rl-batch: also time LLM.generate on N prompts")
    ap.add_argument("--smoke", action="store_true", help="two sizes, one round (CI)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = SIZES[:2] if args.smoke else SIZES
    rounds = 1 if args.smoke else args.rounds
    variants: list[str | None] = [v.strip() for v in args.shim_threads.split(",") if v.strip()] or [None]
    import platform

    import PIL
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, pillow {PIL.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch threads {args.threads}, "
          f"{rounds} rounds, intel_extension_for_pytorch blocked")
    shim = Molmo2Processor.from_pretrained(golden.CHECKPOINT)
    prompt = chat_prompt(shim)
    result: dict[str, Any] = {"threads": args.threads, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="molmo2-bench-") as tmp:
        orig, why = load_original(reference_dir(args.reference), Path(tmp))
        if orig is None:
            print(f"original side SKIPPED: {why}")
        rows = time_sizes(shim, orig, prompt, sizes, rounds, variants)
        decode = {f"{w}x{h}": decode_ms((w, h), 1 if args.smoke else 5) for w, h in sizes}
        result.update(report(rows, variants, orig is not None, decode))
        if args.profile:
            result["profile"] = run_profile(shim, orig, prompt, (640, 480), 5 if args.smoke else 30)
        if args.rl_batch:
            result["rl_batch"] = rl_batch(shim, orig, prompt, args.rl_batch, args.rollout)
    if sys.modules.get("intel_extension_for_pytorch") is not None:
        print("intel_extension_for_pytorch was imported: figures are not on stock torch kernels", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if orig is not None and not all(r.get("bit_identical", True) for r in result["rows"]):
        print("outputs differ from the original processor", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
