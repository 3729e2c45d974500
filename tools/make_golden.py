"""Build tiny random checkpoints of every released Molmo2 structure, plus goldens of the ORIGINAL code.

    python tools/make_golden.py [--remote-code PATH] [--only NAME ...] [--skip-bf16]
    python tools/make_golden.py --verify [--remote-code PATH]

The original implementation is the hub remote code of allenai/Molmo2-4B (five .py files,
Apache-2.0). It is read from ``../shared/reference/molmo2-4b-remote`` relative to the repository
root, or from ``--remote-code``. It is only ever copied into temporary folders: the checkpoints
written here hold data files only, never the remote code.

What it writes (see tests/fixtures/family/README.md, which this script also writes):

* ``tests/fixtures/family/<structure>/checkpoint/``: a tiny checkpoint with the structure of one
  released model, built by instantiating the original ``Molmo2Config`` /
  ``Molmo2ForConditionalGeneration``, filling the weights deterministically (the rule of the
  existing golden fixture, with a seeded ``torch.Generator``) and calling ``save_pretrained``.
* ``tests/fixtures/family/<structure>/golden/<case>.npz`` and ``manifest.json``: what the original
  processor and model return on four small cases.
* ``tests/fixtures/golden-bf16/<case>.npz`` and ``manifest.json``: the original model loaded in
  bfloat16 (sdpa and eager) on the existing ``tests/fixtures/molmo2-tiny`` checkpoint, which is
  read, never modified.

Rerunning with the same library versions reproduces every file byte for byte: weights come from a
seeded generator, JSON is written with fixed key order, and npz members get a fixed zip timestamp
(``np.savez_compressed`` stamps the current time into the zip, which would change every run).

``--verify`` rebuilds nothing: it loads each written checkpoint with the original code from a
fresh temporary copy, reruns the processor, forward and generate of every case and requires the
saved arrays to be reproduced exactly (logits bit for bit), checks that each tokenizer loads with
``AutoTokenizer``, that the processor's BOS is the expected token, and that config.json's token ids
match the tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REMOTE_CODE = REPO.parent / "shared" / "reference" / "molmo2-4b-remote"
REMOTE_FILES = (
    "configuration_molmo2.py",
    "modeling_molmo2.py",
    "image_processing_molmo2.py",
    "processing_molmo2.py",
    "video_processing_molmo2.py",
)
FIXTURES = REPO / "tests" / "fixtures"
TINY = FIXTURES / "molmo2-tiny"
FAMILY = FIXTURES / "family"
BF16 = FIXTURES / "golden-bf16"

# The CPU thread count changes float summation order in torch kernels, hence the logits' last
# bits. The existing goldens were made with 2 threads; every run of this script uses 2 as well.
NUM_THREADS = 2
MAX_NEW_TOKENS = 16
# Fixtures live in git: each tiny checkpoint should stay near the existing one (~4.2 MB).
CHECKPOINT_BUDGET_BYTES = 4_500_000
GENERATE_DESC = (
    "model.generation_config.eos_token_id = None; model.generate(**inputs, generation_config=GenerationConfig(max_new_tokens=16, "
    "do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id), use_model_defaults=False): greedy, EOS disabled"
)
# Files of the existing tiny checkpoint that the Qwen-tokenizer structures reuse unchanged.
QWEN_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json", "chat_template.jinja")
# The Molmo2 special tokens, in the order the original tokenizer builder appends them (their ids
# start at text vocab_size); config.json's token ids point into this block.
MOLMO2_TOKENS = (
    "<im_start>",
    "<im_end>",
    "<im_patch>",
    "<im_col>",
    "<low_res_im_start>",
    "<|image|>",
    "<im_low>",
    "<frame_start>",
    "<frame_end>",
    "<|video|>",
)
CONFIG_TOKEN_IDS = {
    "image_start_token_id": "<im_start>",
    "image_end_token_id": "<im_end>",
    "image_patch_id": "<im_patch>",
    "image_high_res_id": "<im_patch>",
    "image_col_id": "<im_col>",
    "low_res_image_start_token_id": "<low_res_im_start>",
    "image_low_res_id": "<im_low>",
    "frame_start_token_id": "<frame_start>",
    "frame_end_token_id": "<frame_end>",
}

# ----------------------------------------------------------------------------------------------
# Structures: the tiny sizes of the existing fixture, with the five fields on which the released
# models' text backbones differ (norm_after, qk norm, rope_theta, rope scaling, GQA).
# ----------------------------------------------------------------------------------------------

YARN_O7B = {
    "rope_type": "yarn",
    "factor": 8.0,
    "attention_factor": 1.2079441541679836,
    "original_max_position_embeddings": 8192,
    # ints, as the converter writes them from the training config's int literals
    "beta_fast": 32,
    "beta_slow": 1,
}


@dataclass(frozen=True)
class Structure:
    name: str
    mirrors: str  # the released model(s) whose structure this is
    seed: int
    text_overrides: dict[str, Any]
    top_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "qwen"  # "qwen": the tiny fixture's tokenizer files; "olmo": built here
    mm_token_type_ids: bool = True  # what the processor is called with (MolmoWeb: False)
    expected_bos: str = "<|im_end|>"
    notes: str = ""
    # Perturbations of the loaded original model whose logit distance the manifest records: how
    # far off a port that got this structure's distinguishing field wrong would be.
    probes: tuple[str, ...] = ()


STRUCTURES: tuple[Structure, ...] = (
    Structure(
        name="qwen3-8b",
        mirrors="allenai/Molmo2-8B",
        seed=2001,
        text_overrides={"rope_theta": 1000000.0},
        notes="Qwen3-8B backbone: qwen3 per-head qk norm, pre-norm, GQA; rope_theta 1e6 (4B has 5e6).",
        probes=("rope_theta_5e6_as_4b",),
    ),
    Structure(
        name="olmo3-7b",
        mirrors="allenai/Molmo2-O-7B",
        seed=2002,
        text_overrides={
            "norm_after": True,
            "use_qk_norm": True,
            "qk_norm_type": "olmo",
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "rope_theta": 500000.0,
            "rope_scaling": YARN_O7B,
            # a strict subset, so that both the default and the YaRN table are used
            "rope_scaling_layers": [1],
            "max_position_embeddings": 65536,
        },
        tokenizer="olmo",
        expected_bos="<|endoftext|>",
        notes=(
            "OLMo-3-7B backbone: post-norm (norm_after), olmo qk norm over the whole q/k projection, "
            "no GQA, rope_theta 5e5, YaRN on rope_scaling_layers only, OLMo-style tokenizer."
        ),
        probes=("yarn_on_all_layers", "yarn_on_no_layers"),
    ),
    Structure(
        name="molmoweb",
        mirrors="allenai/MolmoWeb-4B",
        seed=2003,
        text_overrides={},
        top_overrides={"is_mm_prefix_lm": False},
        mm_token_type_ids=False,
        notes=(
            "Molmo2-4B structure; goldens made the way AllenAI runs MolmoWeb: processor called with "
            "return_mm_token_type_ids=False, so no token_type_ids and purely causal attention. "
            "config.json carries is_mm_prefix_lm=false for the shim; the original code ignores it."
        ),
        probes=("bidirectional_with_token_type_ids",),
    ),
)

# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    images: tuple[tuple[int, int, int], ...] = ()  # (width, height, seed) of synth_rgb images
    video: tuple[int, int, int, int] | None = None  # (frames, width, height, seed) of synth_video
    video_fps: float = 2.0


CASES: tuple[Case, ...] = (
    Case("text_only", "What is the capital of France?"),
    Case("one_image", "Describe this image.", images=((378, 378, 1238),)),
    Case("two_images", "Compare the two images.", images=((300, 200, 1236), (200, 300, 1237))),
    Case("video", "What happens in this video?", video=(4, 160, 120, 1239)),
)


def synth_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """The golden README's synthetic image recipe (int64 arithmetic, then uint8)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    s = seed % 7
    chans = [(x * (3 + c + s) + y * (5 + 2 * c + s) + (x * y) // (7 + c) + 41 * c + 17 * s) % 256 for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def synth_video(frames: int, width: int, height: int, seed: int) -> np.ndarray:
    return np.stack([np.roll(synth_rgb(width, height, seed + t), 9 * t, axis=1) for t in range(frames)])


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, except every member gets the same zip timestamp (reproducible bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # force_zip64 as numpy does (gh-10776)
            with zf.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(value), allow_pickle=False)
    path.write_bytes(buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def versions() -> dict[str, Any]:
    import PIL
    import safetensors
    import tokenizers
    import torch
    import torchvision
    import transformers

    # No platform string: it names the kernel build and would make reruns on other hosts differ.
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torchvision": torchvision.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "torch_num_threads": NUM_THREADS,
        "device": "cpu",
    }


def remote_sha256(remote: Path) -> dict[str, str]:
    return {name: sha256_file(remote / name) for name in REMOTE_FILES}


@contextlib.contextmanager
def runnable_copy(checkpoint: Path, remote: Path, folder: str = "ckpt") -> Iterator[Path]:
    """A temporary folder (named `folder`) holding the checkpoint's files plus the remote code
    next to config.json."""
    with tempfile.TemporaryDirectory(prefix="molmo2_golden_") as tmp:
        dst = Path(tmp) / folder
        shutil.copytree(checkpoint, dst)
        for name in REMOTE_FILES:
            shutil.copy(remote / name, dst / name)
        yield dst


def tensor_stats(a: np.ndarray) -> dict[str, float]:
    a64 = a.astype(np.float64)
    return {"mean": float(a64.mean()), "std": float(a64.std()), "absmax": float(np.abs(a64).max())}


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ----------------------------------------------------------------------------------------------
# Weights: the existing fixture's rule (reproduces tests/fixtures/molmo2-tiny/model.safetensors
# bit for bit with seed 1234). Parameters are visited in sorted-name order, each draws
# torch.randn(shape) from one seeded generator, then is scaled per its role.
# ----------------------------------------------------------------------------------------------


def init_rule(name: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    module = name.split(".")[-2]
    if module in ("q_norm", "k_norm"):
        # Sharper text attention; without it greedy continuations collapse to one repeated token.
        # Applied to both qwen3 (per-head) and olmo (whole-projection) q/k norms.
        return "2*(1 + 0.1*N(0,1))", lambda z: 2 * (1 + 0.1 * z)
    is_norm = "norm" in module or module == "ln_f"
    if is_norm and name.endswith(".weight"):
        return "1 + 0.1*N(0,1)", lambda z: 1 + 0.1 * z
    if is_norm and name.endswith(".bias"):
        return "0.05*N(0,1)", lambda z: 0.05 * z
    if name.endswith(("wte.embedding", "wte.new_embedding")):
        return "0.5*N(0,1)", lambda z: 0.5 * z
    if name == "lm_head.weight":
        return "0.15*N(0,1)", lambda z: 0.15 * z
    if name.endswith("positional_embedding"):
        return "0.1*N(0,1)", lambda z: 0.1 * z
    if name.endswith(".bias"):
        return "0.02*N(0,1)", lambda z: 0.02 * z
    if name.startswith("model.vision_backbone."):
        return "0.05*N(0,1)", lambda z: 0.05 * z
    return "0.08*N(0,1)", lambda z: 0.08 * z


def init_weights(model: torch.nn.Module, seed: int) -> dict[str, str]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    rules: dict[str, str] = {}
    with torch.no_grad():
        for name in sorted(params):
            label, fn = init_rule(name)
            z = torch.randn(params[name].shape, generator=generator, dtype=torch.float32)
            params[name].copy_(fn(z))
            rules[name] = label
    return rules


# ----------------------------------------------------------------------------------------------
# OLMo-style tokenizer (tiny): GPT-2 byte-level BPE with the cl100k pre-tokeniser regex OLMo-3's
# dolma2 tokenizer uses; <|endoftext|> right after the BPE vocab (as OLMo's 100257) and used as
# bos, eos and unk; then the chat tokens, <|pad|>, |<EXTRA_TOKENS_i>| fillers, and the Molmo2
# tokens starting exactly at vocab_size.
# ----------------------------------------------------------------------------------------------

CL100K_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
OLMO_BPE_SIZE = 480  # 256 byte symbols + 224 merges; <|endoftext|> gets id 480
OLMO_BASE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
TEXT_VOCAB_SIZE = 512
OLMO_CORPUS = (
    "What is the capital of France? The capital of France is Paris.",
    "Describe this image. The image shows a cat sitting on a wooden table next to a window.",
    "Compare the two images. The first image is brighter than the second one.",
    "What happens in this video? A person walks across the street and waves at the camera.",
    "Point to the red car in the picture and count how many people are standing nearby.",
    "The quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "Molmo is an open vision-language model that can point, count and describe images.",
    "Click on the search box, type the query, then press enter to see the results page.",
    "There are 3 apples, 12 oranges and 105 grapes in the basket on the kitchen counter.",
    "Assistant: I can help you with that. User: Thank you very much for the answer!",
)


def build_olmo_tokenizer(dst: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CL100K_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=OLMO_BPE_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(OLMO_CORPUS), trainer=trainer)
    if tok.get_vocab_size() != OLMO_BPE_SIZE:
        raise RuntimeError(f"BPE training gave {tok.get_vocab_size()} tokens, expected {OLMO_BPE_SIZE}: extend OLMO_CORPUS")
    n_fill = TEXT_VOCAB_SIZE - OLMO_BPE_SIZE - len(OLMO_BASE_SPECIALS)
    fillers = [f"|<EXTRA_TOKENS_{i}>|" for i in range(n_fill)]
    specials = [*OLMO_BASE_SPECIALS, *fillers, *MOLMO2_TOKENS]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    fast = GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=[*fillers, *MOLMO2_TOKENS],
        add_prefix_space=False,
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=65536,
    )
    for t in specials:
        assert fast.convert_tokens_to_ids(t) == specials.index(t) + OLMO_BPE_SIZE, t
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        for name in ("tokenizer.json", "special_tokens_map.json"):
            shutil.copyfile(Path(tmp) / name, dst / name)
        cfg = json.loads((Path(tmp) / "tokenizer_config.json").read_text())
    # What the processor's save_pretrained adds to the tokenizer config (as in the tiny fixture).
    cfg["processor_class"] = "Molmo2Processor"
    cfg["auto_map"] = {"AutoProcessor": "processing_molmo2.Molmo2Processor"}
    write_json(dst / "tokenizer_config.json", cfg)


# ----------------------------------------------------------------------------------------------
# Checkpoint construction with the original classes
# ----------------------------------------------------------------------------------------------


def remote_classes(remote: Path) -> tuple[Any, Any]:
    """The original Molmo2Config / Molmo2ForConditionalGeneration, imported from a temp copy."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    tmp = Path(tempfile.mkdtemp(prefix="molmo2_remote_"))
    for name in REMOTE_FILES:
        shutil.copy(remote / name, tmp / name)
    cfg_cls = get_class_from_dynamic_module("configuration_molmo2.Molmo2Config", str(tmp))
    model_cls = get_class_from_dynamic_module("modeling_molmo2.Molmo2ForConditionalGeneration", str(tmp))
    shutil.rmtree(tmp)
    return cfg_cls, model_cls


def structure_config(s: Structure) -> dict[str, Any]:
    cfg = json.loads((TINY / "config.json").read_text())
    cfg["text_config"].update(s.text_overrides)
    cfg.update(s.top_overrides)
    cfg.pop("transformers_version", None)  # save_pretrained writes its own
    return cfg


def build_checkpoint(s: Structure, remote: Path, dst: Path) -> dict[str, Any]:
    import torch

    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    cfg_dict = structure_config(s)
    cfg_cls, model_cls = remote_classes(remote)
    config = cfg_cls.from_dict(cfg_dict)
    torch.manual_seed(s.seed)  # the model's own init is overwritten below; this only pins it
    model = model_cls(config).eval()
    rules = init_weights(model, s.seed)
    with tempfile.TemporaryDirectory() as tmp:
        # save_pretrained also copies the remote configuration .py next to config.json: saved to a
        # temp folder and only the data files are taken over.
        model.save_pretrained(tmp, safe_serialization=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(Path(tmp) / name, dst / name)
    for name in PROCESSOR_FILES:
        shutil.copyfile(TINY / name, dst / name)
    if s.tokenizer == "qwen":
        for name in QWEN_TOKENIZER_FILES:
            shutil.copyfile(TINY / name, dst / name)
        shutil.copyfile(TINY / "generation_config.json", dst / "generation_config.json")
    else:
        build_olmo_tokenizer(dst)
        eot = OLMO_BPE_SIZE + OLMO_BASE_SPECIALS.index("<|endoftext|>")
        pad = OLMO_BPE_SIZE + OLMO_BASE_SPECIALS.index("<|pad|>")
        # The converter writes bos/eos/pad of the tokenizer; OLMo's bos = eos = <|endoftext|>.
        write_json(dst / "generation_config.json", {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": pad})
    shapes = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sorted(model.state_dict().items())}
    return {"init_rule_per_tensor": rules, "key_shapes": shapes, "num_tensors": len(shapes)}


# ----------------------------------------------------------------------------------------------
# Running the original processor and model
# ----------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    processor: Any
    model: Any
    attn_loaded: dict[str, str]


def attn_of(config: Any) -> dict[str, str]:
    return {
        "top": config._attn_implementation,
        "text": config.text_config._attn_implementation,
        "vit": config.vit_config._attn_implementation,
        "adapter": config.adapter_config._attn_implementation,
    }


def load_original(ckpt: Path, dtype: torch.dtype, attn: str | None) -> Loaded:
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    kwargs: dict[str, Any] = {"trust_remote_code": True, "dtype": dtype}
    if attn is not None:
        # Not AutoModel...from_pretrained(attn_implementation=...): on that route AutoConfig consumes
        # the kwarg while Molmo2Config's sub-configs do not exist yet, so text/ViT/adapter keep the
        # "sdpa" of config.json. Setting it on the loaded config reaches every sub-config.
        config = AutoConfig.from_pretrained(ckpt, trust_remote_code=True)
        config._attn_implementation = attn
        kwargs["config"] = config
    model = AutoModelForImageTextToText.from_pretrained(ckpt, **kwargs).eval()
    loaded = Loaded(processor, model, attn_of(model.config))
    if attn is not None and set(loaded.attn_loaded.values()) != {attn}:
        raise RuntimeError(f"asked for {attn} attention, the original model runs {loaded.attn_loaded}")
    return loaded


def naive_attn_route(ckpt: Path, attn: str) -> dict[str, str]:
    """What AutoModelForImageTextToText.from_pretrained(..., attn_implementation=attn) really loads."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(ckpt, trust_remote_code=True, attn_implementation=attn)
    return attn_of(model.config)


def case_messages(case: Case) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "image"} for _ in case.images]
    if case.video is not None:
        content.append({"type": "video"})
    content.append({"type": "text", "text": case.text})
    return [{"role": "user", "content": content}]


def case_sources(case: Case) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for w, h, seed in case.images:
        out.append({"kind": "rgb", "width": w, "height": h, "seed": seed, "input_sha256_uint8": sha256_bytes(synth_rgb(w, h, seed).tobytes())})
    if case.video is not None:
        t, w, h, seed = case.video
        out.append(
            {
                "kind": "video",
                "frames": t,
                "width": w,
                "height": h,
                "seed": seed,
                "fps": case.video_fps,
                "frames_indices": list(range(t)),
                "do_sample_frames": False,
                "input_sha256_uint8": sha256_bytes(synth_video(t, w, h, seed).tobytes()),
            }
        )
    return out


def process(loaded: Loaded, case: Case, mm_token_type_ids: bool) -> tuple[str, dict[str, Any]]:
    from PIL import Image
    from transformers.video_utils import VideoMetadata

    processor = loaded.processor
    prompt = processor.apply_chat_template(case_messages(case), tokenize=False, add_generation_prompt=True)
    kwargs: dict[str, Any] = {"text": prompt, "return_tensors": "pt"}
    if not mm_token_type_ids:
        kwargs["return_mm_token_type_ids"] = False  # as MolmoWeb's HF backend calls it
    if case.images:
        kwargs["images"] = [Image.fromarray(synth_rgb(w, h, seed), "RGB") for w, h, seed in case.images]
    if case.video is not None:
        t, w, h, seed = case.video
        kwargs["videos"] = [synth_video(t, w, h, seed)]
        kwargs["video_metadata"] = [
            VideoMetadata(
                total_num_frames=t, fps=case.video_fps, duration=t / case.video_fps, frames_indices=list(range(t)), height=h, width=w
            )
        ]
        kwargs["do_sample_frames"] = False
    inputs = dict(processor(**kwargs))
    return prompt, inputs


def model_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    out = dict(inputs)
    if "token_type_ids" in out:
        out["token_type_ids"] = out["token_type_ids"].long()
    return out


def forward_logits(loaded: Loaded, inputs: dict[str, Any]) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = loaded.model(**model_inputs(inputs), use_cache=False).logits
    return logits[0].float().numpy()


def greedy_tokens_and_margins(out: Any, prompt_len: int, expected: int = MAX_NEW_TOKENS) -> tuple[np.ndarray, list[float]]:
    """The `expected` greedy tokens of a generate() output and, per step, the gap between
    the top two scores (how safely greedy decoding picked each token)."""
    import torch

    new = out.sequences[0, prompt_len:].numpy().astype(np.int64)
    if new.shape != (expected,):
        raise RuntimeError(f"generate stopped early: {new.tolist()}")
    margins = []
    for step in out.scores:
        top2 = torch.topk(step[0].float(), 2).values
        margins.append(float(top2[0] - top2[1]))
    return new, margins


def greedy(loaded: Loaded, inputs: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    """HF generate, greedy, EOS disabled (= vLLM temperature 0, ignore_eos), 16 new tokens."""
    import torch
    from transformers import GenerationConfig

    tok = loaded.processor.tokenizer
    # generate() fills a None eos_token_id from the model's generation_config (even with
    # use_model_defaults=False), so EOS is switched off there, in memory only.
    loaded.model.generation_config.eos_token_id = None
    gen_cfg = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        out = loaded.model.generate(
            **model_inputs(inputs), generation_config=gen_cfg, use_model_defaults=False, output_scores=True, return_dict_in_generate=True
        )
    return greedy_tokens_and_margins(out, inputs["input_ids"].shape[1])


def greedy_nocache(loaded: Loaded, inputs: dict[str, Any], steps: int) -> list[int]:
    """Greedy recomputed with full no-cache forwards (new tokens get token type 0): a cross-check."""
    import torch

    cur = model_inputs(inputs)
    ids: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            logits = loaded.model(**cur, use_cache=False).logits
        nxt = int(logits[0, -1].float().argmax())
        ids.append(nxt)
        one = torch.ones((1, 1), dtype=cur["input_ids"].dtype)
        cur["input_ids"] = torch.cat([cur["input_ids"], one * nxt], dim=1)
        cur["attention_mask"] = torch.cat([cur["attention_mask"], torch.ones((1, 1), dtype=cur["attention_mask"].dtype)], dim=1)
        if "token_type_ids" in cur:
            cur["token_type_ids"] = torch.cat([cur["token_type_ids"], torch.zeros((1, 1), dtype=cur["token_type_ids"].dtype)], dim=1)
    return ids


POOLING_KEYS = ("image_token_pooling", "image_grids", "image_num_crops", "video_token_pooling", "video_grids")


def base_arrays(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    ids = inputs["input_ids"][0].numpy().astype(np.int64)
    if "token_type_ids" in inputs:
        tt = inputs["token_type_ids"][0].numpy().astype(bool)
    else:
        tt = np.zeros(ids.shape, dtype=bool)  # none passed: nothing attends bidirectionally
    arrays = {"input_ids": ids, "token_type_ids": tt}
    for key in POOLING_KEYS:
        if key in inputs:
            arrays[key] = inputs[key].numpy().astype(np.int64)
    return arrays


def rle(tokens: list[str]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for t in tokens:
        if out and out[-1][0] == t:
            out[-1][1] += 1
        else:
            out.append([t, 1])
    return out


def case_record(loaded: Loaded, case: Case, prompt: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    tok = loaded.processor.tokenizer
    ids = arrays["input_ids"].tolist()
    patch_id = tok.convert_tokens_to_ids("<im_patch>")
    return {
        "prompt": prompt,
        "sources": case_sources(case),
        "seq_len": len(ids),
        "first_token": tok.convert_ids_to_tokens(ids[0]),
        "num_im_patch": int(sum(1 for i in ids if i == patch_id)),
        "token_type_ids_sum": int(arrays["token_type_ids"].sum()),
        "input_tokens_rle": rle(tok.convert_ids_to_tokens(ids)),
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
    }


def logits_record(logits: np.ndarray) -> dict[str, Any]:
    last = logits[-1]
    top = np.argsort(-last, kind="stable")[:5]
    return {**tensor_stats(logits), "last_top5_ids": [int(i) for i in top], "last_top5_vals": [float(last[i]) for i in top]}


# ----------------------------------------------------------------------------------------------
# Family structures
# ----------------------------------------------------------------------------------------------


def config_summary(config_json: Path) -> dict[str, Any]:
    cfg = json.loads(config_json.read_text())
    text_keys = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
        "vocab_size", "additional_vocab_size", "norm_after", "use_qk_norm", "qk_norm_type", "qkv_bias", "rope_theta",
        "rope_scaling", "rope_scaling_layers", "max_position_embeddings", "layer_norm_eps",
    )  # fmt: skip
    top = {k: v for k, v in cfg.items() if k.endswith("_id") or k in ("use_frame_special_tokens", "is_mm_prefix_lm")}
    return {
        "text": {k: cfg["text_config"].get(k) for k in text_keys},
        "vit": {k: cfg["vit_config"][k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size")},
        "adapter": {k: cfg["adapter_config"][k] for k in ("hidden_size", "intermediate_size", "text_hidden_size", "vit_layers")},
        "top": top,
    }


def tokenizer_checks(ckpt: Path, loaded: Loaded, s: Structure) -> dict[str, Any]:
    """AutoTokenizer loads; the processor's BOS rule picks the expected token; config ids match."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    ptok = loaded.processor.tokenizer
    bos = ptok.bos_token_id or ptok.eos_token_id  # the rule of Molmo2Processor.__call__
    if ptok.convert_ids_to_tokens(bos) != s.expected_bos:
        raise RuntimeError(f"{s.name}: processor BOS is {ptok.convert_ids_to_tokens(bos)!r}, expected {s.expected_bos!r}")
    cfg = json.loads((ckpt / "config.json").read_text())
    for key, token in CONFIG_TOKEN_IDS.items():
        if cfg[key] != tok.convert_tokens_to_ids(token):
            raise RuntimeError(f"{s.name}: config {key}={cfg[key]} but tokenizer has {token}={tok.convert_tokens_to_ids(token)}")
    ids = {t: tok.convert_tokens_to_ids(t) for t in (*OLMO_BASE_SPECIALS, *MOLMO2_TOKENS) if t in tok.get_vocab()}
    gen = json.loads((ckpt / "generation_config.json").read_text())
    return {
        "class": type(tok).__name__,
        "len": len(tok),
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
        "processor_bos_id": int(bos),
        "processor_bos_token": ptok.convert_ids_to_tokens(bos),
        "special_ids": ids,
        "generation_config": gen,
    }


PROBE_DOC = {
    "rope_theta_5e6_as_4b": "rope_theta 5e6 (Molmo2-4B's) instead of 1e6",
    "yarn_on_all_layers": "YaRN table on every layer (rope_scaling_layers ignored)",
    "yarn_on_no_layers": "default RoPE on every layer (rope_scaling ignored)",
    "bidirectional_with_token_type_ids": "processor default return_mm_token_type_ids=True: bidirectional image attention",
}


def probe_logits(probe: str, s: Structure, loaded: Loaded, case: Case) -> np.ndarray:
    """Logits of the loaded original model with one field deliberately changed (in memory only)."""
    text_model = loaded.model.model.transformer
    cfg = text_model.config
    if probe == "bidirectional_with_token_type_ids":
        # what serving MolmoWeb with the Molmo2 default (bidirectional image attention) would give
        _, inputs = process(loaded, case, True)
        return forward_logits(loaded, inputs)
    _, inputs = process(loaded, case, s.mm_token_type_ids)
    if probe == "rope_theta_5e6_as_4b":
        original = text_model.rotary_emb
        changed = copy.deepcopy(cfg)
        changed.rope_theta = 5000000.0
        text_model.rotary_emb = type(original)(changed)
        try:
            return forward_logits(loaded, inputs)
        finally:
            text_model.rotary_emb = original
    if probe in ("yarn_on_all_layers", "yarn_on_no_layers"):
        # The forward picks the "scaling" (YaRN) table for layers listed in rope_scaling_layers.
        layers = cfg.rope_scaling_layers
        cfg.rope_scaling_layers = list(range(cfg.num_hidden_layers)) if probe == "yarn_on_all_layers" else []
        try:
            return forward_logits(loaded, inputs)
        finally:
            cfg.rope_scaling_layers = layers
    raise ValueError(probe)


def make_structure(s: Structure, remote: Path) -> None:
    import torch

    root = FAMILY / s.name
    ckpt_dir = root / "checkpoint"
    golden_dir = root / "golden"
    print(f"[{s.name}] building checkpoint (seed {s.seed})", flush=True)
    weights = build_checkpoint(s, remote, ckpt_dir)
    size = (ckpt_dir / "model.safetensors").stat().st_size
    if size > CHECKPOINT_BUDGET_BYTES:
        print(f"[{s.name}] WARNING: model.safetensors is {size} bytes, over the {CHECKPOINT_BUDGET_BYTES} budget", flush=True)
    if golden_dir.exists():
        shutil.rmtree(golden_dir)
    golden_dir.mkdir(parents=True)

    manifest: dict[str, Any] = {
        "structure": s.name,
        "mirrors": s.mirrors,
        "notes": s.notes,
        "seed": s.seed,
        "versions": versions(),
        "remote_code_sha256": remote_sha256(remote),
        "generator": "tools/make_golden.py",
        "config": config_summary(ckpt_dir / "config.json"),
        "processor_call": {"return_mm_token_type_ids": s.mm_token_type_ids},
        "forward": "model(**inputs, use_cache=False) in float32"
        + (", token_type_ids passed as long (bidirectional image attention)" if s.mm_token_type_ids else ", no token_type_ids (causal only)"),
        "generate": GENERATE_DESC,
        "probes": {p: "max |logits - golden| when the original runs with " + PROBE_DOC[p] for p in s.probes},
        "checkpoint_files_sha256": {p.name: sha256_file(p) for p in sorted(ckpt_dir.iterdir())},
        "model_safetensors_bytes": size,
        "weights": {"init": "sorted parameter names, torch.Generator().manual_seed(seed), torch.randn(shape), scaled per rule", **weights},
        "cases": {},
    }
    with runnable_copy(ckpt_dir, remote) as run_dir:
        loaded = load_original(run_dir, torch.float32, None)
        manifest["attn_implementation_loaded"] = loaded.attn_loaded
        manifest["tokenizer"] = tokenizer_checks(run_dir, loaded, s)
        if s.top_overrides:
            manifest["config_extra_keys_loaded"] = {k: getattr(loaded.model.config, k, "<missing>") for k in s.top_overrides}
        results: dict[str, dict[str, np.ndarray]] = {}
        for case in CASES:
            prompt, inputs = process(loaded, case, s.mm_token_type_ids)
            if s.mm_token_type_ids != ("token_type_ids" in inputs):
                raise RuntimeError(f"{s.name}/{case.name}: token_type_ids presence does not match the processor call")
            arrays = base_arrays(inputs)
            logits = forward_logits(loaded, inputs)
            gen, margins = greedy(loaded, inputs)
            nocache = greedy_nocache(loaded, inputs, MAX_NEW_TOKENS)
            arrays["logits"] = logits
            arrays["generate"] = gen
            save_npz(golden_dir / f"{case.name}.npz", arrays)
            results[case.name] = arrays
            rec = case_record(loaded, case, prompt, arrays)
            rec["logits_stats"] = logits_record(logits)
            rec["generate_ids"] = gen.tolist()
            rec["generate_tokens"] = loaded.processor.tokenizer.convert_ids_to_tokens(gen.tolist())
            rec["generate_top1_minus_top2"] = margins
            rec["generate_matches_nocache_greedy"] = nocache == gen.tolist()
            rec["nocache_greedy_ids"] = nocache
            rec["probes_maxabs"] = {p: max_abs(probe_logits(p, s, loaded, case), logits) for p in s.probes}
            manifest["cases"][case.name] = rec
            print(f"[{s.name}] {case.name}: S={len(arrays['input_ids'])} logit std {rec['logits_stats']['std']:.4f} gen {gen.tolist()}", flush=True)
        del loaded
    # Rerun: a second, independent load of the written checkpoint, same inputs.
    with runnable_copy(ckpt_dir, remote) as run_dir:
        loaded = load_original(run_dir, torch.float32, None)
        for case in CASES:
            _, inputs = process(loaded, case, s.mm_token_type_ids)
            manifest["cases"][case.name]["rerun_maxabs"] = max_abs(forward_logits(loaded, inputs), results[case.name]["logits"])
    manifest["golden_files_bytes"] = {p.name: p.stat().st_size for p in sorted(golden_dir.iterdir())}
    write_json(root / "manifest.json", manifest)


def verify_structure(s: Structure, remote: Path) -> list[str]:
    import torch

    root = FAMILY / s.name
    problems: list[str] = []
    manifest = json.loads((root / "manifest.json").read_text())
    with runnable_copy(root / "checkpoint", remote) as run_dir:
        loaded = load_original(run_dir, torch.float32, None)
        checks = tokenizer_checks(run_dir, loaded, s)
        if checks != manifest["tokenizer"]:
            problems.append(f"{s.name}: tokenizer checks differ from the manifest")
        if s.top_overrides:
            for k, v in s.top_overrides.items():
                if getattr(loaded.model.config, k, "<missing>") != v:
                    problems.append(f"{s.name}: config key {k} did not survive loading")
        for case in CASES:
            saved = load_npz(root / "golden" / f"{case.name}.npz")
            _, inputs = process(loaded, case, s.mm_token_type_ids)
            now = base_arrays(inputs)
            now["logits"] = forward_logits(loaded, inputs)
            now["generate"], _ = greedy(loaded, inputs)
            if sorted(now) != sorted(saved):
                problems.append(f"{s.name}/{case.name}: keys {sorted(now)} != {sorted(saved)}")
                continue
            for k in saved:
                if saved[k].dtype != now[k].dtype or not np.array_equal(saved[k], now[k]):
                    problems.append(f"{s.name}/{case.name}: {k} not reproduced exactly")
            print(f"[verify {s.name}] {case.name}: logits maxabs {max_abs(now['logits'], saved['logits'])}", flush=True)
    return problems


# ----------------------------------------------------------------------------------------------
# bfloat16 goldens of the existing tiny checkpoint
# ----------------------------------------------------------------------------------------------


def bf16_arrays(remote: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    import torch

    arrays: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, Any] = {"cases": {}}
    with runnable_copy(TINY, remote) as run_dir:
        loaded = load_original(run_dir, torch.bfloat16, "sdpa")
        info["attn_implementation_loaded_sdpa"] = loaded.attn_loaded
        info["param_dtype_sdpa"] = str(next(loaded.model.parameters()).dtype)
        for case in CASES:
            prompt, inputs = process(loaded, case, True)
            a = base_arrays(inputs)
            a["logits_sdpa"] = forward_logits(loaded, inputs)
            a["generate_sdpa"], margins = greedy(loaded, inputs)
            rec = case_record(loaded, case, prompt, a)
            rec["generate_sdpa_ids"] = a["generate_sdpa"].tolist()
            rec["generate_sdpa_top1_minus_top2"] = margins
            rec["rerun_maxabs_sdpa"] = max_abs(forward_logits(loaded, inputs), a["logits_sdpa"])
            arrays[case.name] = a
            info["cases"][case.name] = rec
        del loaded
        loaded = load_original(run_dir, torch.bfloat16, "eager")
        info["attn_implementation_loaded_eager"] = loaded.attn_loaded
        info["naive_route_attn_implementation_eager"] = {
            "call": 'AutoModelForImageTextToText.from_pretrained(ckpt, trust_remote_code=True, attn_implementation="eager")',
            "loaded": naive_attn_route(run_dir, "eager"),
            "note": "config.json pins sdpa in every sub-config; this route only changes the unused top level, so its outputs equal sdpa",
        }
        for case in CASES:
            _, inputs = process(loaded, case, True)
            arrays[case.name]["logits_eager"] = forward_logits(loaded, inputs)
        del loaded
        # float32 reference on the same cases: only its distance is recorded, not the logits.
        loaded = load_original(run_dir, torch.float32, None)
        for case in CASES:
            _, inputs = process(loaded, case, True)
            ref = forward_logits(loaded, inputs)
            a = arrays[case.name]
            rec = info["cases"][case.name]
            rec["logits_stats_sdpa"] = logits_record(a["logits_sdpa"])
            rec["sdpa_vs_eager_maxabs"] = max_abs(a["logits_sdpa"], a["logits_eager"])
            rec["sdpa_vs_eager_maxabs_text_positions"] = max_abs(a["logits_sdpa"][~a["token_type_ids"]], a["logits_eager"][~a["token_type_ids"]])
            rec["bf16_sdpa_vs_fp32_maxabs"] = max_abs(a["logits_sdpa"], ref)
            rec["bf16_eager_vs_fp32_maxabs"] = max_abs(a["logits_eager"], ref)
            rec["fp32_last_argmax"] = int(ref[-1].argmax())
            rec["bf16_sdpa_last_argmax"] = int(a["logits_sdpa"][-1].argmax())
    return arrays, info


def make_bf16(remote: Path) -> None:
    print("[golden-bf16] molmo2-tiny in bfloat16 (sdpa, eager)", flush=True)
    arrays, info = bf16_arrays(remote)
    if BF16.exists():
        shutil.rmtree(BF16)
    BF16.mkdir(parents=True)
    for name, a in arrays.items():
        ordered = {k: a[k] for k in ("input_ids", "token_type_ids", *POOLING_KEYS, "logits_sdpa", "logits_eager", "generate_sdpa") if k in a}
        save_npz(BF16 / f"{name}.npz", ordered)
        rec = info["cases"][name]
        print(f"[golden-bf16] {name}: sdpa-vs-eager {rec['sdpa_vs_eager_maxabs']:.4g} bf16-vs-fp32 {rec['bf16_sdpa_vs_fp32_maxabs']:.4g}", flush=True)
    manifest = {
        "checkpoint": "tests/fixtures/molmo2-tiny",
        "checkpoint_model_safetensors_sha256": sha256_file(TINY / "model.safetensors"),
        "versions": versions(),
        "remote_code_sha256": remote_sha256(remote),
        "generator": "tools/make_golden.py",
        "load": (
            "config = AutoConfig.from_pretrained(ckpt, trust_remote_code=True); config._attn_implementation = 'sdpa'|'eager' "
            "(reaches text, ViT and adapter sub-configs); AutoModelForImageTextToText.from_pretrained(ckpt, config=config, "
            "trust_remote_code=True, dtype=torch.bfloat16)"
        ),
        "forward": "model(**inputs, use_cache=False), token_type_ids passed as long; logits cast bf16 -> float32 for storage",
        "generate": "sdpa model; " + GENERATE_DESC,
        **{k: v for k, v in info.items() if k != "cases"},
        "cases": info["cases"],
        "golden_files_bytes": {p.name: p.stat().st_size for p in sorted(BF16.iterdir())},
    }
    write_json(BF16 / "manifest.json", manifest)


def verify_bf16(remote: Path) -> list[str]:
    arrays, _ = bf16_arrays(remote)
    problems: list[str] = []
    for name, now in arrays.items():
        saved = load_npz(BF16 / f"{name}.npz")
        bad = [k for k in saved if k not in now or saved[k].dtype != now[k].dtype or not np.array_equal(saved[k], now[k])]
        problems += [f"golden-bf16/{name}: {k} not reproduced exactly" for k in bad]
        print(f"[verify golden-bf16] {name}: " + ("all arrays bit-exact" if not bad else f"differs in {bad}"), flush=True)
    return problems


# ----------------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------------


def write_readme(remote: Path) -> None:
    v = versions()
    sha = remote_sha256(remote)
    rows = []
    for s in STRUCTURES:
        m = FAMILY / s.name / "manifest.json"
        if not m.exists():
            continue
        man = json.loads(m.read_text())
        t = man["config"]["text"]
        rows.append(
            f"| `{s.name}` | {s.mirrors} | {s.seed} | norm_after {str(t['norm_after']).lower()}, qk norm {t['qk_norm_type']}, "
            f"heads {t['num_attention_heads']}/{t['num_key_value_heads']}, rope_theta {t['rope_theta']:.0f}"
            + (f", {t['rope_scaling']['rope_type']} on layers {t['rope_scaling_layers']}" if t["rope_scaling"] else "")
            + (", `is_mm_prefix_lm: false`, no token_type_ids" if not s.mm_token_type_ids else "")
            + f" | `{man['tokenizer']['processor_bos_token']}` ({man['tokenizer']['processor_bos_id']}) |"
        )
    sha_rows = "\n".join(f"| {k} | {h} |" for k, h in sha.items())
    text = f"""# Molmo2 family fixtures (tiny random checkpoints + goldens of the original code)

Made by `python tools/make_golden.py` (verify with `python tools/make_golden.py --verify`). The
script instantiates the ORIGINAL Molmo2 remote code (the hub code of allenai/Molmo2-4B, Apache-2.0;
read from `../shared/reference/molmo2-4b-remote` or `--remote-code`, only ever run from temporary
folders, never copied here), builds each checkpoint with its `Molmo2Config` /
`Molmo2ForConditionalGeneration` and `save_pretrained`, and records what the original processor and
model return. Only data lives here.

Versions: python {v['python']}, torch {v['torch']} (CPU, {NUM_THREADS} threads), transformers {v['transformers']},
torchvision {v['torchvision']}, tokenizers {v['tokenizers']}, safetensors {v['safetensors']}, numpy {v['numpy']},
pillow {v['pillow']}. Rerunning with these versions on the same kind of CPU reproduces every file
byte for byte (reruns here: identical sha256 for every file, `rerun_maxabs` 0.0). CPU float32
kernels differ between processors and thread counts in the last bits: the existing
`tests/fixtures/golden` logits reproduce on this script's host to ~1e-5, not bitwise, while tokens,
pooling indices and greedy continuations match exactly.

Original code (sha256, also in each `manifest.json -> remote_code_sha256`):

| file | sha256 |
|---|---|
{sha_rows}

## Structures (`family/<structure>/`)

All share the tiny sizes of `tests/fixtures/molmo2-tiny` (text hidden 128, 3 layers, head_dim 32,
intermediate 256, vocab 512 + 128 additional; ViT 64 wide, 10 layers of which 8 are instantiated;
adapter as there) and its processor files; they differ in the fields on which the released text
backbones differ.

| structure | mirrors | seed | text backbone | processor BOS |
|---|---|---|---|---|
{chr(10).join(rows)}

* `qwen3-8b` and `molmoweb` reuse the tiny fixture's Qwen-style tokenizer files; `olmo3-7b` has its
  own GPT-2-style byte-level BPE (cl100k pre-tokeniser regex, trained on a few sentences):
  `<|endoftext|>` {OLMO_BPE_SIZE} (bos = eos = unk), `<|im_start|>` {OLMO_BPE_SIZE + 1}, `<|im_end|>` {OLMO_BPE_SIZE + 2},
  `<|pad|>` {OLMO_BPE_SIZE + 3}, `|<EXTRA_TOKENS_i>|` fillers up to 511, then the ten Molmo2 tokens at 512..521 in the
  same order as the tiny tokenizer, so config.json's token ids are the same in every structure.
* `molmoweb`'s goldens are made the way AllenAI runs MolmoWeb: the processor is called with
  `return_mm_token_type_ids=False`, so no `token_type_ids` exist and the attention is purely
  causal (the npz `token_type_ids` is all false). Its config.json has `"is_mm_prefix_lm": false`,
  the flag the shim reads; the original code keeps it as an unused attribute.
* Weights: the existing fixture's rule (it reproduces `molmo2-tiny/model.safetensors` bit for bit
  with seed 1234): parameters in sorted-name order, one `torch.Generator` seeded per structure,
  `torch.randn`; norms `1+0.1N`, q/k norms `2*(1+0.1N)` (qwen3 and olmo alike), LayerNorm biases `0.05N`,
  embeddings `0.5N`, lm_head `0.15N`, ViT positional embedding `0.1N`, other biases `0.02N`, other
  vision/adapter weights `0.05N`, other text weights `0.08N` (`manifest.json -> weights`).

Layout: `checkpoint/` (config.json, model.safetensors, tokenizer files, processor_config.json,
preprocessor_config.json, video_preprocessor_config.json, chat_template.jinja,
generation_config.json), `golden/<case>.npz`, `manifest.json`. To run a checkpoint with the
original code, copy it to a temporary folder, put the five remote-code files next to config.json
and load with `trust_remote_code=True`.

## Cases

Prompt = `processor.apply_chat_template([{{"role": "user", "content": [...media..., {{"type": "text", ...}}]}}],
tokenize=False, add_generation_prompt=True)`, then `processor(text=prompt, images=/videos=..., return_tensors="pt")`.
Synthetic media follow `tests/golden.py` (`synth_rgb`, `synth_video`).

| case | text | media |
|---|---|---|
| `text_only` | What is the capital of France? | none |
| `one_image` | Describe this image. | synth_rgb(378, 378, seed 1238) |
| `two_images` | Compare the two images. | synth_rgb(300, 200, 1236), synth_rgb(200, 300, 1237) |
| `video` | What happens in this video? | synth_video(4, 160, 120, seed 1239), uint8 THWC, fps 2, frames_indices 0..3, `do_sample_frames=False` |

npz keys: `input_ids` int64 [S] (BOS included), `token_type_ids` bool [S], `logits` float32 [S, 512]
(float32 forward, `use_cache=False`, with `token_type_ids` as long except molmoweb),
`generate` int64 [16] (greedy, EOS disabled; equals vLLM `temperature=0, ignore_eos=True`: generate
refills a None `eos_token_id` from the model's generation_config, so that is set to None in memory,
then `GenerationConfig(max_new_tokens=16, do_sample=False, eos_token_id=None)`, `use_model_defaults=False`),
and `image_token_pooling` / `image_grids` / `image_num_crops` or `video_token_pooling` /
`video_grids` (int64). The manifest has per case the prompt, sources (with the sha256 of the uint8
input), token layout (`input_tokens_rle`), logit statistics, greedy logit margins, a no-cache greedy
cross-check, `rerun_maxabs` (an independent reload and forward; 0.0 = bitwise) and `probes_maxabs`:
how far the original's logits move when the structure's distinguishing field is changed in memory
(qwen3-8b: Molmo2-4B's rope_theta; olmo3-7b: YaRN on all / no layers; molmoweb: with the default
bidirectional `token_type_ids`), i.e. what a port that gets that field wrong would be off by.

## `../golden-bf16/`

The existing `tests/fixtures/molmo2-tiny` checkpoint (unchanged) loaded with the original code in
`torch.bfloat16`, once with sdpa and once with eager attention, on the same four cases (with
`token_type_ids`). npz keys: the inputs as above, `logits_sdpa`, `logits_eager` (float32 arrays
holding the bf16 results) and `generate_sdpa`. The manifest records sdpa-vs-eager and bf16-vs-float32
distances and the greedy margins per case (bf16 logits tie exactly at some greedy steps: margin 0.0).

The attention implementation is set on the loaded config (`config._attn_implementation = ...`, which
reaches the text, ViT and adapter sub-configs). `AutoModelForImageTextToText.from_pretrained(...,
attn_implementation="eager")` does NOT switch the original model to eager: config.json pins "sdpa" in
each sub-config and that route only changes the unused top level (`manifest.json ->
naive_route_attn_implementation_eager`). The original eager ViT/pooling attention ignores its
attention mask, so at image positions sdpa and eager differ by more than rounding.
"""
    (FAMILY / "README.md").write_text(text)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remote-code", type=Path, default=DEFAULT_REMOTE_CODE, help="folder with the five original .py files")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in STRUCTURES] + ["bf16"], help="build only these")
    parser.add_argument("--skip-bf16", action="store_true", help="do not (re)build tests/fixtures/golden-bf16")
    parser.add_argument("--verify", action="store_true", help="check the written fixtures instead of building them")
    args = parser.parse_args(argv)

    remote: Path = args.remote_code.resolve()
    missing = [n for n in REMOTE_FILES if not (remote / n).is_file()]
    if missing:
        print(f"original remote code not found in {remote} (missing {missing}); pass --remote-code", file=sys.stderr)
        return 2

    # transformers copies trust_remote_code modules into HF_MODULES_CACHE: keep that in a temp
    # folder of this run (set before transformers is imported).
    modules_tmp = tempfile.mkdtemp(prefix="molmo2_hfmodules_")
    os.environ["HF_MODULES_CACHE"] = modules_tmp
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(NUM_THREADS)
    try:
        everything = {s.name for s in STRUCTURES} | (set() if args.skip_bf16 else {"bf16"})
        selected = set(args.only) if args.only else everything
        if args.verify:
            problems: list[str] = []
            for s in STRUCTURES:
                if s.name in selected:
                    problems += verify_structure(s, remote)
            if "bf16" in selected:
                problems += verify_bf16(remote)
            for p in problems:
                print("FAIL", p)
            print("verify:", "ok" if not problems else f"{len(problems)} problem(s)")
            return 1 if problems else 0
        for s in STRUCTURES:
            if s.name in selected:
                make_structure(s, remote)
        if "bf16" in selected:
            make_bf16(remote)
        write_readme(remote)
    finally:
        shutil.rmtree(modules_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
