"""Build LoRA adapter fixtures in PEFT's own format, plus goldens of PEFT applied to the model each was made for.

    python tools/make_lora_fixtures.py --install-peft PEFT_DIR         # PEFT into a throwaway folder
    python tools/make_lora_fixtures.py --peft-path PEFT_DIR             # build everything
    python tools/make_lora_fixtures.py --peft-path PEFT_DIR --verify

The adapters are made with the PEFT library (``get_peft_model`` + ``save_pretrained``); PEFT is
never a dependency of the project: it is installed with ``pip --target`` into a folder outside
the repository and put on PYTHONPATH of the two worker processes only. What it writes (see
tests/fixtures/lora/README.md, which this script also writes):

* ``tests/fixtures/lora/original-names/``: a LoRA adapter for the ORIGINAL remote-code model
  (tests/fixtures/molmo2-tiny in a temporary folder next to the hub's five .py files, loaded with
  trust_remote_code in the torch 2.8 / transformers 4.57.6 test environment) on the text decoder's
  ``att_proj``, ``attn_out``, ``ff_proj``, ``ff_out``; ``golden/<case>.npz``: that model with the
  adapter (PEFT forward, float32, sdpa) on three golden cases, and the same after ``merge_and_unload``.
* ``tests/fixtures/lora/native-names/``: a LoRA adapter for transformers >= 5.20's NATIVE Molmo2
  (the hf-reference environment, no remote code) on the text decoder's q/k/v/o/gate/up/down
  projections, with goldens on the same cases (inputs from ``molmo2_shim.verl.actor_inputs`` +
  ``collate(native=True)``).
* ``tests/fixtures/lora/vision-target/``: a small adapter for the original model that also targets
  the vision tower's ``wq`` (no golden: vLLM cannot apply LoRA there, so the shim must refuse it).
* ``tests/fixtures/lora/manifest.json``: versions, PEFT configs, tensor names and shapes, sha256 of
  every file, per-case distances (adapter vs base, merged vs adapter, reload vs golden).

LoRA A and B are both filled from a seeded ``torch.Generator`` (PEFT zero-initialises B, which
would make the adapter a no-op). Each worker runs with PYTHONHASHSEED=0 (PEFT writes the
``target_modules`` set of adapter_config.json in set iteration order), two CPU threads, and loads
the base model from a temporary folder named ``molmo2-tiny`` (PEFT records the remote-code
module name, which transformers derives from that folder's name). Rerunning with the same library
versions reproduces every file byte for byte.

The full-prompt logits of the image cases would not fit the fixture budget (~12 MB in float32),
so each npz keeps the logit rows of every text position, every 16th image position and the last
position (``positions``); input ids and token types cover the whole prompt.

``--verify`` rebuilds nothing: it reloads every adapter with ``PeftModel.from_pretrained`` from
the saved files onto a fresh base model and requires the saved logits, merged logits and greedy
tokens to be reproduced bit for bit, and the adapter files to match the manifest's sha256.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The test environments tools/testenv.py builds: the 0.11.2 row's (transformers 4.57, which runs
# the hub code) and the transformers 5 reference environment.
sys.path.insert(0, str(REPO / "tools"))
import testenv  # noqa: E402
from make_golden import (  # noqa: E402  (the golden data's helpers: same files, same byte-reproducible writers)
    DEFAULT_REMOTE_CODE,
    REMOTE_FILES,
    greedy_tokens_and_margins,
    load_npz,
    max_abs,
    save_npz,
    sha256_file,
    write_json,
)
from make_golden import runnable_copy as _runnable_copy  # noqa: E402
from make_golden import versions as _golden_versions  # noqa: E402

DEFAULT_ORIGINAL_PYTHON = testenv.interpreter(testenv.row_for("0.11.2"))
DEFAULT_NATIVE_PYTHON = testenv.env_root() / "hf-reference" / "bin" / "python"
FIXTURES = REPO / "tests" / "fixtures"
TINY = FIXTURES / "molmo2-tiny"
GOLDEN = FIXTURES / "golden"
LORA = FIXTURES / "lora"
# What PEFT writes as base_model_name_or_path (instead of the temporary folder the model came from).
BASE_NAME = "tests/fixtures/molmo2-tiny"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# PEFT and what it needs beyond the test environments (accelerate; psutil for hf-reference).
PEFT_VERSION = "0.18.0"
PEFT_REQUIREMENTS = (f"peft=={PEFT_VERSION}", "accelerate==1.11.0", "psutil==7.2.2")

NUM_THREADS = 2  # as tools/make_golden.py: the thread count changes the logits' last bits
MAX_NEW_TOKENS = 16
IMAGE_ROW_STRIDE = 16
SIZE_BUDGET_BYTES = 3_000_000
CASES = ("text_only", "one_image_640x480", "two_images_300x200_500x800")
GENERATE_DESC = (
    "generation_config.eos_token_id = None on the base model; model.generate(**inputs, generation_config=GenerationConfig("
    "max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id), use_model_defaults=False "
    "(transformers 4.57 only; 5.x no longer takes it)): greedy, EOS disabled; cross-checked against a greedy loop of full "
    "no-cache forwards (new tokens get token type 0)"
)


# One spec per adapter: what PEFT is asked for, how A and B are filled.
ADAPTERS: dict[str, dict[str, Any]] = {
    "original-names": {
        "model": "original",
        "lora_config": {"r": 8, "lora_alpha": 16, "target_modules": ["att_proj", "attn_out", "ff_proj", "ff_out"], "lora_dropout": 0.0},
        "seed": 3001,
        "a_std": 0.1,
        "b_std": 0.014,
        "golden": True,
    },
    "native-names": {
        "model": "native",
        "lora_config": {
            "r": 4,
            "lora_alpha": 8,
            # a regex (full match): the native vision tower and projector have q/k/v/o and gate/up/down too
            "target_modules": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
            "lora_dropout": 0.0,
        },
        "seed": 3002,
        "a_std": 0.1,
        "b_std": 0.02,
        "golden": True,
    },
    "vision-target": {
        "model": "original",
        # "wq" matches the ViT blocks' attention.wq and the image pooling's wq
        "lora_config": {"r": 4, "lora_alpha": 8, "target_modules": ["att_proj", "wq"], "lora_dropout": 0.0},
        "seed": 3003,
        "a_std": 0.1,
        "b_std": 0.02,
        "golden": False,
    },
}


# ----------------------------------------------------------------------------------------------
# Small helpers (the conventions of tools/make_golden.py)
# ----------------------------------------------------------------------------------------------












def versions() -> dict[str, Any]:
    import accelerate
    import peft

    return {**_golden_versions(), "peft": peft.__version__, "accelerate": accelerate.__version__}


def golden_module() -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    import golden

    return golden


def row_positions(token_type_ids: np.ndarray) -> np.ndarray:
    """Prompt positions whose logit rows are stored: text positions, every 16th image position, the last."""
    image = np.flatnonzero(token_type_ids)
    keep = ~token_type_ids.astype(bool)
    keep[image[::IMAGE_ROW_STRIDE]] = True
    keep[-1] = True
    return np.flatnonzero(keep).astype(np.int64)


def lora_tensors(adapter_dir: Path) -> dict[str, list[Any]]:
    """Name -> [shape, dtype] from the safetensors header (8-byte length, then JSON): stdlib only."""
    data = (adapter_dir / "adapter_model.safetensors").read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return {k: [v["shape"], v["dtype"]] for k, v in sorted(header.items()) if k != "__metadata__"}


def fill_lora(model: Any, seed: int, a_std: float, b_std: float) -> dict[str, Any]:
    """Overwrite every lora_A / lora_B weight with seeded normal values (sorted parameter names)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_A." in name or ".lora_B." in name:
                std = a_std if ".lora_A." in name else b_std
                param.copy_(std * torch.randn(param.shape, generator=generator, dtype=torch.float32))
                names.append(name)
    if not names:
        raise RuntimeError("PEFT created no LoRA weights")
    return {
        "rule": f"sorted parameter names; torch.Generator().manual_seed({seed}); lora_A = {a_std}*randn, lora_B = {b_std}*randn",
        "num_tensors": len(names),
    }


def make_lora_config(spec: dict[str, Any]) -> Any:
    from peft import LoraConfig

    return LoraConfig(**spec["lora_config"])


def save_adapter(peft_model: Any, dst: Path) -> None:
    """PEFT's save_pretrained into a temporary folder; its adapter_config.json and
    adapter_model.safetensors are taken over unchanged (the model card README.md is not)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        for name in ADAPTER_FILES:
            shutil.copyfile(Path(tmp) / name, dst / name)


def check_peft() -> None:
    import peft

    if peft.__version__ != PEFT_VERSION:
        raise RuntimeError(f"PEFT {peft.__version__} is importable, this script pins {PEFT_VERSION} (--install-peft)")


# ----------------------------------------------------------------------------------------------
# Models: the original remote code and transformers' native Molmo2
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def runnable_copy(remote: Path) -> Iterator[Path]:
    """molmo2-tiny plus the remote code, in a temporary folder always named molmo2-tiny: transformers
    names the remote-code module after the folder (transformers_modules.molmo2_hyphen_tiny), and
    PEFT writes that module name into adapter_config.json."""
    with _runnable_copy(TINY, remote, folder="molmo2-tiny") as dst:
        yield dst


class OriginalRunner:
    """The original remote-code model on molmo2-tiny, inputs from the original processor."""

    kind = "original"

    def __init__(self, ckpt: Path) -> None:
        from transformers import AutoProcessor

        self.ckpt = ckpt
        self.processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
        self.tokenizer = self.processor.tokenizer

    def load(self) -> Any:
        import torch
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(self.ckpt, trust_remote_code=True, dtype=torch.float32).eval()
        cfg = model.config
        attn = {cfg._attn_implementation, cfg.text_config._attn_implementation, cfg.vit_config._attn_implementation,
                cfg.adapter_config._attn_implementation}
        if attn != {"sdpa"}:
            raise RuntimeError(f"the original model loaded with {attn} attention, expected sdpa")
        model.name_or_path = BASE_NAME
        return model

    def inputs(self, name: str) -> dict[str, Any]:
        """tests/original.py golden_case_inputs: the original processor on the golden prompt and images."""
        golden = golden_module()
        case = golden.manifest()["model_cases"][name]
        kwargs: dict[str, Any] = {"text": case["prompt"], "return_tensors": "pt"}
        images = golden.model_case_images(name)
        if images:
            kwargs["images"] = images
        inputs = dict(self.processor(**kwargs))
        inputs["token_type_ids"] = inputs["token_type_ids"].long()
        return inputs

    mask_key = "token_type_ids"
    generate_drop: tuple[str, ...] = ()
    generate_kwargs: dict[str, Any] = {"use_model_defaults": False}  # transformers 4.57 (5.x no longer takes it)


class NativeRunner:
    """transformers' native Molmo2 on molmo2-tiny (no remote code), inputs from molmo2_shim.verl."""

    kind = "native"
    mask_key = "mm_token_type_ids"
    # collate's position_ids are arange for one unpadded example; generate computes its own
    generate_drop = ("position_ids",)
    generate_kwargs: dict[str, Any] = {}

    def __init__(self) -> None:
        from molmo2_shim.processing.processor import Molmo2Processor

        self.processor = Molmo2Processor.from_pretrained(TINY)
        self.tokenizer = self.processor.tokenizer

    def load(self) -> Any:
        import torch
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(str(TINY), dtype=torch.float32, attn_implementation="sdpa").eval()
        if not type(model).__module__.startswith("transformers.models.molmo2"):
            raise RuntimeError(f"expected transformers' native Molmo2, got {type(model).__module__}")
        model.name_or_path = BASE_NAME
        return model

    def inputs(self, name: str) -> dict[str, Any]:
        from molmo2_shim.verl import actor_inputs, collate

        golden = golden_module()
        prompt = golden.manifest()["model_cases"][name]["prompt"]
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        example = actor_inputs(self.processor, ids, golden.model_case_images(name))
        return collate([example], self.tokenizer.pad_token_id, "right", native=True)


def forward(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    return logits[0].float().numpy()


def base_of(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def greedy(runner: Any, model: Any, inputs: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    import torch
    from transformers import GenerationConfig

    base_of(model).generation_config.eos_token_id = None  # generate() would fill EOS back in from it
    cfg = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=runner.tokenizer.pad_token_id)
    kwargs = {k: v for k, v in inputs.items() if k not in runner.generate_drop}
    with torch.no_grad():
        out = model.generate(**kwargs, **runner.generate_kwargs, generation_config=cfg, output_scores=True, return_dict_in_generate=True)
    return greedy_tokens_and_margins(out, inputs["input_ids"].shape[1], MAX_NEW_TOKENS)


def greedy_nocache(runner: Any, model: Any, inputs: dict[str, Any]) -> list[int]:
    """Greedy recomputed with full no-cache forwards (new tokens get token type 0)."""
    import torch

    cur = {k: v for k, v in inputs.items() if k not in runner.generate_drop}
    ids: list[int] = []
    for _ in range(MAX_NEW_TOKENS):
        with torch.no_grad():
            logits = model(**cur, use_cache=False).logits
        nxt = int(logits[0, -1].float().argmax())
        ids.append(nxt)
        for key, value in (("input_ids", nxt), ("attention_mask", 1), (runner.mask_key, 0)):
            cur[key] = torch.cat([cur[key], torch.full((1, 1), value, dtype=cur[key].dtype)], dim=1)
    return ids


def case_arrays(runner: Any, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    ids = inputs["input_ids"][0].numpy().astype(np.int64)
    tt = inputs[runner.mask_key][0].numpy().astype(bool)
    return {"input_ids": ids, "token_type_ids": tt, "positions": row_positions(tt)}


def check_golden_ids(name: str, arrays: dict[str, np.ndarray]) -> None:
    """The inputs are those of tests/fixtures/golden (same ids, same image mask)."""
    golden = golden_module()
    z = golden.model_case(name)
    if not np.array_equal(z["input_ids"].astype(np.int64), arrays["input_ids"]):
        raise RuntimeError(f"{name}: input_ids differ from tests/fixtures/golden")
    if not np.array_equal(z["token_type_ids"], arrays["token_type_ids"]):
        raise RuntimeError(f"{name}: token types differ from tests/fixtures/golden")


# ----------------------------------------------------------------------------------------------
# Workers (run inside the test environments, PEFT on PYTHONPATH)
# ----------------------------------------------------------------------------------------------


def build_golden_adapter(name: str, runner: Any) -> dict[str, Any]:
    from peft import PeftModel, get_peft_model

    spec = ADAPTERS[name]
    root = LORA / name
    golden_dir = root / "golden"
    print(f"[{name}] base model and inputs", flush=True)
    model = runner.load()
    inputs = {c: runner.inputs(c) for c in CASES}
    arrays = {c: case_arrays(runner, inputs[c]) for c in CASES}
    for c in CASES:
        check_golden_ids(c, arrays[c])
    base = {c: forward(model, inputs[c]) for c in CASES}
    golden = golden_module()
    base_vs_golden = {c: max_abs(base[c], golden.model_case(c)["logits_bidir"]) for c in CASES} if runner.kind == "original" else None
    base_greedy = {c: greedy(runner, model, inputs[c])[0].tolist() for c in CASES}

    peft_model = get_peft_model(model, make_lora_config(spec))
    init = fill_lora(peft_model, spec["seed"], spec["a_std"], spec["b_std"])
    peft_model.eval()
    save_adapter(peft_model, root)
    print(f"[{name}] adapter saved: {sorted(p.name for p in root.iterdir())}", flush=True)
    record: dict[str, Any] = {"init": init, "cases": {}}
    if base_vs_golden is not None:
        # the base model (no adapter) against tests/fixtures/golden's logits_bidir: same code, same numbers
        record["base_vs_tests_fixtures_golden_maxabs"] = base_vs_golden
        print(f"[{name}] base model vs tests/fixtures/golden logits_bidir: {base_vs_golden}", flush=True)
    full: dict[str, dict[str, np.ndarray]] = {}
    for c in CASES:
        logits = forward(peft_model, inputs[c])
        gen, margins = greedy(runner, peft_model, inputs[c])
        nocache = greedy_nocache(runner, peft_model, inputs[c])
        full[c] = {"logits": logits, "generate": gen}
        pos = arrays[c]["positions"]
        record["cases"][c] = {
            "seq_len": int(len(arrays[c]["input_ids"])),
            "num_image_positions": int(arrays[c]["token_type_ids"].sum()),
            "num_stored_rows": int(len(pos)),
            "adapter_vs_base_maxabs": max_abs(logits, base[c]),
            "adapter_vs_base_maxabs_last_position": max_abs(logits[-1], base[c][-1]),
            "adapter_vs_base_maxabs_stored_rows": max_abs(logits[pos], base[c][pos]),
            "base_generate_ids": base_greedy[c],
            "generate_ids": gen.tolist(),
            "generate_tokens": runner.tokenizer.convert_ids_to_tokens(gen.tolist()),
            "generate_top1_minus_top2": margins,
            "generate_matches_nocache_greedy": nocache == gen.tolist(),
            "last_top5_ids": [int(i) for i in np.argsort(-logits[-1], kind="stable")[:5]],
        }
        print(f"[{name}] {c}: S={len(logits)} |adapter - base| max {record['cases'][c]['adapter_vs_base_maxabs']:.4f} gen {gen.tolist()}"
              f" nocache-match {nocache == gen.tolist()}", flush=True)
    merged = peft_model.merge_and_unload()
    for c in CASES:
        full[c]["merged"] = forward(merged, inputs[c])
        record["cases"][c]["merged_vs_adapter_maxabs"] = max_abs(full[c]["merged"], full[c]["logits"])
        record["cases"][c]["merged_vs_adapter_maxabs_stored_rows"] = max_abs(full[c]["merged"][arrays[c]["positions"]],
                                                                             full[c]["logits"][arrays[c]["positions"]])
        print(f"[{name}] {c}: |merged - adapter| max {record['cases'][c]['merged_vs_adapter_maxabs']:.3g}", flush=True)
    del merged, peft_model, model

    if golden_dir.exists():
        shutil.rmtree(golden_dir)
    golden_dir.mkdir(parents=True)
    for c in CASES:
        pos = arrays[c]["positions"]
        out = {**arrays[c], "logits": full[c]["logits"][pos], "merged_logits": full[c]["merged"][pos], "generate": full[c]["generate"]}
        save_npz(golden_dir / f"{c}.npz", out)

    # Reload from the saved files onto a fresh base model: everything must come back bit for bit.
    fresh = PeftModel.from_pretrained(runner.load(), str(root)).eval()
    for c in CASES:
        rec = record["cases"][c]
        rec["reload_logits_maxabs"] = max_abs(forward(fresh, inputs[c]), full[c]["logits"])
        rec["reload_generate_equal"] = greedy(runner, fresh, inputs[c])[0].tolist() == full[c]["generate"].tolist()
    merged = fresh.merge_and_unload()
    for c in CASES:
        record["cases"][c]["reload_merged_maxabs"] = max_abs(forward(merged, inputs[c]), full[c]["merged"])
    bad = {c: r for c, r in record["cases"].items()
           if r["reload_logits_maxabs"] or r["reload_merged_maxabs"] or not r["reload_generate_equal"]}
    if bad:
        raise RuntimeError(f"{name}: reloading the saved adapter did not reproduce the goldens exactly: {bad}")
    print(f"[{name}] reload from the saved files: logits, merged logits and greedy bit-exact", flush=True)
    return record


def build_vision_adapter(name: str, runner: Any) -> dict[str, Any]:
    import torch
    from peft import PeftModel, get_peft_model

    spec = ADAPTERS[name]
    root = LORA / name
    peft_model = get_peft_model(runner.load(), make_lora_config(spec))
    init = fill_lora(peft_model, spec["seed"], spec["a_std"], spec["b_std"])
    save_adapter(peft_model, root)
    saved = {k: v.detach().clone() for k, v in peft_model.named_parameters() if ".lora_" in k}
    fresh = PeftModel.from_pretrained(runner.load(), str(root))
    now = dict(fresh.named_parameters())
    if sorted(now_k for now_k in now if ".lora_" in now_k) != sorted(saved) or not all(torch.equal(now[k], v) for k, v in saved.items()):
        raise RuntimeError(f"{name}: reloaded LoRA weights differ")
    # What the vision part does: the image case's logits move (recorded, not stored).
    inputs = runner.inputs("one_image_640x480")
    tt = inputs["token_type_ids"][0].bool().numpy()
    with_vision = forward(fresh, inputs)
    with torch.no_grad():
        for k, p in fresh.named_parameters():
            if ".lora_B." in k and "vision_backbone" in k:
                p.zero_()
    text_only_part = forward(fresh, inputs)
    print(f"[{name}] saved and reloaded ({init['num_tensors']} LoRA tensors)", flush=True)
    return {
        "init": init,
        "reload_weights_equal": True,
        # how far the logits move when the vision part of the adapter is dropped (small in the tiny model)
        "one_image_640x480_vision_lora_effect_maxabs": max_abs(with_vision, text_only_part),
        "one_image_640x480_vision_lora_effect_maxabs_text_positions": max_abs(with_vision[~tt], text_only_part[~tt]),
    }


def keep_ipex_out() -> None:
    """The torch 2.8 environment has intel_extension_for_pytorch (for vLLM CPU). PEFT's
    PeftModel.from_pretrained calls accelerate's is_xpu_available(), which imports it, and the
    import replaces CPU kernels: every later forward's last bits change (~1e-5 in these logits).
    Marking it unimportable keeps the whole run on stock torch kernels, as tools/make_golden.py ran."""
    sys.modules["intel_extension_for_pytorch"] = None  # type: ignore[assignment]


def worker(kind: str, names: list[str], remote: Path, report: Path) -> int:
    import torch

    torch.set_num_threads(NUM_THREADS)
    check_peft()
    result: dict[str, Any] = {"versions": versions(), "adapters": {}}
    if kind == "original":
        with runnable_copy(remote) as ckpt:
            runner = OriginalRunner(ckpt)
            for name in names:
                build = build_golden_adapter if ADAPTERS[name]["golden"] else build_vision_adapter
                result["adapters"][name] = build(name, runner)
    else:
        runner = NativeRunner()
        for name in names:
            result["adapters"][name] = build_golden_adapter(name, runner)
    if sys.modules.get("intel_extension_for_pytorch") is not None:
        raise RuntimeError("intel_extension_for_pytorch was imported: the goldens would not be on stock torch kernels")
    write_json(report, result)
    return 0


def verify_worker(kind: str, names: list[str], remote: Path, report: Path) -> int:
    import torch
    from peft import PeftModel

    torch.set_num_threads(NUM_THREADS)
    check_peft()
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        runner = OriginalRunner(stack.enter_context(runnable_copy(remote))) if kind == "original" else NativeRunner()
        for name in names:
            root = LORA / name
            if not ADAPTERS[name]["golden"]:
                fresh = PeftModel.from_pretrained(runner.load(), str(root))
                n = sum(1 for k, _ in fresh.named_parameters() if ".lora_" in k)
                print(f"[verify {name}] loads with PEFT: {n} LoRA tensors", flush=True)
                continue
            fresh = PeftModel.from_pretrained(runner.load(), str(root)).eval()
            saved = {c: load_npz(root / "golden" / f"{c}.npz") for c in CASES}
            inputs = {c: runner.inputs(c) for c in CASES}
            for c in CASES:
                arrays = case_arrays(runner, inputs[c])
                for k in arrays:
                    if not np.array_equal(arrays[k], saved[c][k]):
                        problems.append(f"{name}/{c}: {k} differs")
                pos = saved[c]["positions"]
                logits = forward(fresh, inputs[c])[pos]
                if not np.array_equal(logits, saved[c]["logits"]):
                    problems.append(f"{name}/{c}: logits not reproduced (max {max_abs(logits, saved[c]['logits']):.3g})")
                gen, _ = greedy(runner, fresh, inputs[c])
                if gen.tolist() != saved[c]["generate"].tolist():
                    problems.append(f"{name}/{c}: generate {gen.tolist()} != {saved[c]['generate'].tolist()}")
                print(f"[verify {name}] {c}: logits maxabs {max_abs(logits, saved[c]['logits'])}", flush=True)
            merged = fresh.merge_and_unload()
            for c in CASES:
                m = forward(merged, inputs[c])[saved[c]["positions"]]
                if not np.array_equal(m, saved[c]["merged_logits"]):
                    problems.append(f"{name}/{c}: merged_logits not reproduced (max {max_abs(m, saved[c]['merged_logits']):.3g})")
    write_json(report, {"problems": problems})
    return 0


# ----------------------------------------------------------------------------------------------
# Orchestration (any Python with numpy)
# ----------------------------------------------------------------------------------------------


def run_worker(python: Path, kind: str, names: list[str], args: argparse.Namespace, verify: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="molmo2_lora_run_") as tmp:
        report = Path(tmp) / "report.json"
        modules = Path(tmp) / "hf_modules"
        env = dict(os.environ, PYTHONHASHSEED="0", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_MODULES_CACHE=str(modules))
        if args.peft_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(args.peft_path), os.environ.get("PYTHONPATH", "")) if p)
        cmd = [str(python), str(Path(__file__).resolve()), "--worker", kind, "--names", *names, "--remote-code", str(args.remote_code),
               "--report", str(report)]
        if verify:
            cmd.append("--verify")
        print(f"== {kind} worker ({python}): {', '.join(names)}", flush=True)
        subprocess.run(cmd, check=True, env=env, cwd=REPO)
        return json.loads(report.read_text())


def file_table() -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(LORA)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(LORA.rglob("*"))
        if p.is_file() and p.name not in ("README.md", "manifest.json")
    }


def remote_sha256(remote: Path) -> dict[str, str]:
    return {name: sha256_file(remote / name) for name in REMOTE_FILES}


def build(args: argparse.Namespace) -> int:
    reports = {}
    for kind, python in (("original", args.original_python), ("native", args.native_python)):
        names = [n for n, s in ADAPTERS.items() if s["model"] == kind]
        reports[kind] = run_worker(python, kind, names, args, verify=False)
    manifest: dict[str, Any] = {
        "generator": "tools/make_lora_fixtures.py",
        "remote_code_sha256": remote_sha256(args.remote_code),
        "checkpoint": BASE_NAME,
        "checkpoint_model_safetensors_sha256": sha256_file(TINY / "model.safetensors"),
        "cases": list(CASES),
        "stored_rows": f"positions = every text position (token type 0), every {IMAGE_ROW_STRIDE}th image position, the last position",
        "generate": GENERATE_DESC,
        "adapters": {},
    }
    for name, spec in ADAPTERS.items():
        report = reports[spec["model"]]
        root = LORA / name
        manifest["adapters"][name] = {
            "model": spec["model"],
            "versions": report["versions"],
            "lora_config_call": spec["lora_config"],
            "adapter_config": json.loads((root / "adapter_config.json").read_text()),
            "tensors": lora_tensors(root),
            **report["adapters"][name],
        }
    manifest["files"] = file_table()
    total = sum(f["bytes"] for f in manifest["files"].values())
    manifest["total_bytes_without_readme_and_manifest"] = total
    write_json(LORA / "manifest.json", manifest)
    write_readme(manifest)
    if total > SIZE_BUDGET_BYTES:
        print(f"WARNING: the LoRA fixtures take {total} bytes, over the {SIZE_BUDGET_BYTES} budget", flush=True)
    return verify(args)


def verify(args: argparse.Namespace) -> int:
    problems: list[str] = []
    manifest = json.loads((LORA / "manifest.json").read_text())
    for rel, rec in manifest["files"].items():
        p = LORA / rel
        if not p.is_file() or sha256_file(p) != rec["sha256"]:
            problems.append(f"{rel}: missing or not the file the manifest records")
    for kind, python in (("original", args.original_python), ("native", args.native_python)):
        names = [n for n, s in ADAPTERS.items() if s["model"] == kind]
        problems += run_worker(python, kind, names, args, verify=True)["problems"]
    for p in problems:
        print("FAIL", p)
    print("verify:", "ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def install_peft(target: Path, python: Path) -> int:
    """pip --target: PEFT and what it needs, outside every environment of the project."""
    subprocess.run([str(python), "-m", "pip", "install", "--target", str(target), "--no-deps", *PEFT_REQUIREMENTS], check=True)
    print(f"installed {' '.join(PEFT_REQUIREMENTS)} into {target}; pass --peft-path {target}")
    return 0


# ----------------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------------


def write_readme(m: dict[str, Any]) -> None:
    o, n, v = (m["adapters"][k] for k in ("original-names", "native-names", "vision-target"))

    def keys(a: dict[str, Any], count: int = 4) -> str:
        return "\n".join(f"{k}  {shape} {dtype}" for k, (shape, dtype) in list(a["tensors"].items())[:count])

    def cases(a: dict[str, Any]) -> str:
        rows = []
        for c, r in a["cases"].items():
            rows.append(f"| {c} | {r['seq_len']} | {r['num_stored_rows']} | {r['adapter_vs_base_maxabs']:.3f} | "
                        f"{r['adapter_vs_base_maxabs_last_position']:.3f} | {r['merged_vs_adapter_maxabs']:.2e} | "
                        f"{'yes' if r['generate_matches_nocache_greedy'] else 'NO'} |")
        return ("| case | S | stored rows | max abs(adapter - base) | at last position | max abs(merged - adapter) | generate = no-cache greedy |\n"
                "|---|---|---|---|---|---|---|\n" + "\n".join(rows))

    def ver(a: dict[str, Any]) -> str:
        x = a["versions"]
        return (f"python {x['python']}, torch {x['torch']}, transformers {x['transformers']}, peft {x['peft']}, accelerate {x['accelerate']}, "
                f"torchvision {x['torchvision']}, tokenizers {x['tokenizers']}, safetensors {x['safetensors']}, numpy {x['numpy']}, "
                f"pillow {x['pillow']}; CPU, {x['torch_num_threads']} threads")

    vision_keys = "\n".join(f"{k}  {shape} {dtype}" for k, (shape, dtype) in v["tensors"].items()
                            if "image_pooling_2d" in k or "resblocks.0." in k)
    sizes = "\n".join(f"| {rel} | {f['bytes']:,} |" for rel, f in m["files"].items())
    text = f"""# LoRA adapter fixtures (made with PEFT)

Written by `tools/make_lora_fixtures.py` (do not edit by hand). Three LoRA adapters for the tiny
checkpoint `tests/fixtures/molmo2-tiny`, in PEFT's real on-disk format (`adapter_config.json` and
`adapter_model.safetensors` exactly as `PeftModel.save_pretrained` writes them; PEFT's model-card
README.md is not kept), made with the PEFT library, and goldens of PEFT applied to the model each
adapter was made for. `manifest.json` holds everything below in full: versions, the LoRA configs,
every tensor name and shape, sha256 and size of every file, per-case distances.

```
python tools/make_lora_fixtures.py --install-peft PEFT_DIR       # pip --target; never into the project's environments
python tools/make_lora_fixtures.py --peft-path PEFT_DIR          # build (then runs --verify)
python tools/make_lora_fixtures.py --peft-path PEFT_DIR --verify
```

The script runs two workers: the ORIGINAL model in the torch 2.8 test environment
(the vLLM 0.11.2 test environment, `python tools/testenv.py build 0.11.2`; `--original-python`) and transformers' NATIVE Molmo2 in the
hf-reference environment (`--native-python`), both with PEFT {PEFT_VERSION} on PYTHONPATH only,
PYTHONHASHSEED=0 (PEFT writes the `target_modules` set in set order) and 2 CPU threads. Rerunning
with the same versions reproduces every file byte for byte.

LoRA weights: PEFT initialises B to zero (a no-op adapter); here every `lora_A` and `lora_B` is
overwritten, in sorted parameter-name order, from one seeded `torch.Generator`
(B's scale is smaller for the rank-8 adapter, so that both move the logits by a few units):

- original-names: {o['init']['rule']}
- native-names: {n['init']['rule']}
- vision-target: {v['init']['rule']}

`base_model_name_or_path` is `{BASE_NAME}` (set as the base model's `name_or_path` before
`get_peft_model`; it would otherwise be the temporary folder the model was loaded from).

## `original-names/`: the original remote-code model

Base: molmo2-tiny copied to a temporary folder named `molmo2-tiny` next to the hub's five .py files
(sha256 in `manifest.json -> remote_code_sha256`), `AutoModelForImageTextToText.from_pretrained(...,
trust_remote_code=True, dtype=torch.float32)` (sdpa in every sub-config).
Versions: {ver(o)}.

`LoraConfig({", ".join(f"{k}={v!r}" for k, v in o["lora_config_call"].items())})`:
the text decoder's linears under the remote code's names (`att_proj` is the fused q/k/v projection,
`ff_proj` the fused up/gate projection). {o['init']['num_tensors']} tensors; PEFT's key names, e.g.:

```
{keys(o)}
```

adapter_config.json's `auto_mapping` names the remote-code class
(`{o['adapter_config']['auto_mapping']}`); `task_type` is null.

## `native-names/`: transformers' native Molmo2

Base: `AutoModelForImageTextToText.from_pretrained("tests/fixtures/molmo2-tiny", dtype=torch.float32,
attn_implementation="sdpa")` with transformers >= 5.20 (no remote code: the native class
`transformers.models.molmo2.modeling_molmo2.Molmo2ForConditionalGeneration`).
Versions: {ver(n)}.

`LoraConfig({", ".join(f"{k}={v!r}" for k, v in n["lora_config_call"].items())})`:
a regex, because the native vision tower (`q_proj`..`o_proj`) and projector (`gate_proj`, `up_proj`, `down_proj`)
reuse the text decoder's module names. {n['init']['num_tensors']} tensors, e.g.:

```
{keys(n)}
```

## `vision-target/`: an adapter vLLM cannot apply

`LoraConfig({", ".join(f"{k}={v!r}" for k, v in v["lora_config_call"].items())})`
on the original model: besides the text decoder's `att_proj`, `wq` matches the ViT blocks'
`model.vision_backbone.image_vit.transformer.resblocks.N.attention.wq` and the image pooling's
`model.vision_backbone.image_pooling_2d.wq`. No golden: the shim must refuse it (vLLM applies LoRA
to the language model only). {v['init']['num_tensors']} tensors, e.g.:

```
{keys(v, 2)}
{vision_keys}
```

Dropping its vision part moves the one_image_640x480 logits by at most {v['one_image_640x480_vision_lora_effect_maxabs']:.2e}
({v['one_image_640x480_vision_lora_effect_maxabs_text_positions']:.2e} at text positions): images barely reach the
tiny model's text logits, so a test cannot tell a silently skipped vision LoRA from the numbers;
the refusal has to come from the tensor names.

## Goldens: `<adapter>/golden/<case>.npz`

Cases of `tests/fixtures/golden` (same prompts, images and input ids): {", ".join(m["cases"])}.

Original: the original processor on the golden prompt and images (tests/original.py
`golden_case_inputs`), `token_type_ids` passed (bidirectional image attention). Native:
`molmo2_shim.verl.actor_inputs(processor, tokenizer.encode(prompt, add_special_tokens=False), images)`
then `collate([example], pad_token_id, "right", native=True)` (`mm_token_type_ids`, position_ids);
the ids equal the original's for all three cases (checked).

| key | what |
|---|---|
| `input_ids` | int64 [S], the whole prompt |
| `token_type_ids` | bool [S], image tokens (the bidirectional mask) |
| `positions` | int64 [R], the prompt positions whose logit rows are stored: {m['stored_rows']} |
| `logits` | float32 [R, 512]: `model(**inputs, use_cache=False).logits[0][positions]`, the base model with the adapter |
|  | (PEFT's forward, float32, sdpa) |
| `merged_logits` | float32 [R, 512]: the same after `merge_and_unload()` |
| `generate` | int64 [16]: greedy continuation, EOS disabled |

Full [S, 512] logits of the two image cases would take about 4 MB per logit set, hence the row
subset (every text position keeps its row; each image position's effect reaches the text positions
after it).

Greedy: {m['generate']}. For the native model `position_ids` is left out of generate (it is
arange for one unpadded example); native `generate` and the no-cache loop agree on every case.

original-names (max abs over all S positions, float32; full numbers in the manifest):

{cases(o)}

native-names:

{cases(n)}

Reloading each adapter with `PeftModel.from_pretrained` from these files onto a fresh base
model reproduces `logits`, `merged_logits` and `generate` bit for bit (`--verify`).

Numerics notes. The torch 2.8 environment has intel_extension_for_pytorch (for vLLM CPU);
`PeftModel.from_pretrained` calls accelerate's `is_xpu_available()`, which imports it, and the
import replaces CPU kernels for the rest of the process (the reloaded adapter's logits then
differed from the in-memory ones by ~1e-5). The workers mark it unimportable, so everything runs
on stock torch kernels. The original base model without adapter reproduces
`tests/fixtures/golden`'s `logits_bidir` to within {max(o['base_vs_tests_fixtures_golden_maxabs'].values()):.1e}
(`base_vs_tests_fixtures_golden_maxabs`), not bit for bit: a plain forward of the original, without PEFT, gives the same distance on this machine.

## Sizes (bytes)

| file | bytes |
|---|---|
{sizes}

Total without README.md and manifest.json: {m['total_bytes_without_readme_and_manifest']:,} bytes.
"""
    (LORA / "README.md").write_text(text)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remote-code", type=Path, default=DEFAULT_REMOTE_CODE, help="folder with the five original .py files")
    parser.add_argument("--peft-path", type=Path, default=os.environ.get("MOLMO2_SHIM_PEFT_PATH"),
                        help="folder with PEFT (see --install-peft), put on the workers' PYTHONPATH")
    parser.add_argument("--original-python", type=Path, default=DEFAULT_ORIGINAL_PYTHON, help="python of the torch 2.8 test environment")
    parser.add_argument("--native-python", type=Path, default=DEFAULT_NATIVE_PYTHON, help="python of the hf-reference environment")
    parser.add_argument("--install-peft", type=Path, metavar="DIR", help=f"pip install --target DIR {' '.join(PEFT_REQUIREMENTS)}")
    parser.add_argument("--verify", action="store_true", help="check the written fixtures instead of building them")
    parser.add_argument("--worker", choices=("original", "native"), help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.install_peft:
        return install_peft(args.install_peft, args.original_python)
    args.remote_code = args.remote_code.resolve()
    missing = [n for n in REMOTE_FILES if not (args.remote_code / n).is_file()]
    if missing:
        print(f"original remote code not found in {args.remote_code} (missing {missing}); pass --remote-code", file=sys.stderr)
        return 2
    if args.worker:
        keep_ipex_out()
        fn = verify_worker if args.verify else worker
        return fn(args.worker, args.names, args.remote_code, args.report)
    for python in (args.original_python, args.native_python):
        if not python.exists():
            print(f"{python} does not exist (tools/testenv.py builds the environments)", file=sys.stderr)
            return 2
    return verify(args) if args.verify else build(args)


if __name__ == "__main__":
    sys.exit(main())
