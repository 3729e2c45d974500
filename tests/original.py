"""The ORIGINAL Molmo2 implementation (the hub's remote code) as a test oracle.

The five remote-code files are read from `../shared/reference/molmo2-4b-remote` next to the
repository (or MOLMO2_SHIM_REFERENCE_CODE), copied next to a checkpoint in a temporary folder
and loaded with `trust_remote_code=True`, as they were run to make the golden data. Nothing
of them is kept in the repository. Where the folder is missing the test fails: a skipped
oracle would let a regression through.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
REMOTE_FILES = ("configuration_molmo2.py", "modeling_molmo2.py", "image_processing_molmo2.py",
                "processing_molmo2.py", "video_processing_molmo2.py")


def remote_code_dir() -> Path:
    path = Path(os.environ.get("MOLMO2_SHIM_REFERENCE_CODE", REPO.parent / "shared" / "reference" / "molmo2-4b-remote"))
    missing = [f for f in REMOTE_FILES if not (path / f).is_file()]
    if missing:
        pytest.fail(
            f"the original Molmo2 remote code is not at {path} (missing {missing}): these tests compare against it. "
            "Put the hub's five .py files there or point MOLMO2_SHIM_REFERENCE_CODE at them.",
            pytrace=False,
        )
    return path


@lru_cache(maxsize=8)
def checkpoint_with_remote_code(checkpoint: str) -> Path:
    """A temporary copy of `checkpoint` with the original's code next to its config.json."""
    target = Path(tempfile.mkdtemp(prefix="molmo2-original-"))
    shutil.copytree(checkpoint, target, dirs_exist_ok=True)
    for name in REMOTE_FILES:
        shutil.copy(remote_code_dir() / name, target / name)
    return target


def load_model(checkpoint: str, dtype: str = "float32", attn_implementation: str = "sdpa") -> Any:
    """A new instance of the original model (the caller may change its weights)."""
    import torch
    from transformers import AutoModelForImageTextToText

    path = checkpoint_with_remote_code(checkpoint)
    loaded = AutoModelForImageTextToText.from_pretrained(
        str(path), trust_remote_code=True, torch_dtype=getattr(torch, dtype), attn_implementation=attn_implementation,
    )
    return loaded.eval()


@lru_cache(maxsize=4)
def model(checkpoint: str, dtype: str = "float32", attn_implementation: str = "sdpa") -> Any:
    """The original model on the checkpoint's weights, shared: never change its weights."""
    return load_model(checkpoint, dtype, attn_implementation)


@lru_cache(maxsize=4)
def processor(checkpoint: str) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(checkpoint_with_remote_code(checkpoint)), trust_remote_code=True)


def load_state_dict_into(original: Any, state: dict[str, Any]) -> None:
    """Overwrite the original model's parameters with a checkpoint-named state dict."""
    import torch

    params = dict(original.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            if name in params:
                params[name].copy_(tensor.to(params[name].dtype))


def golden_case_inputs(name: str) -> dict[str, Any]:
    """The original processor's tensors for a golden model case (its prompt, images, video)."""
    import golden

    case = golden.manifest()["model_cases"][name]
    proc = processor(str(golden.CHECKPOINT))
    kwargs: dict[str, Any] = {"text": case["prompt"], "return_tensors": "pt"}
    images = golden.model_case_images(name)
    if images:
        kwargs["images"] = images
    video = case["sources"].get("video")
    if video:
        from transformers.video_utils import VideoMetadata

        n = video["num_frames"]
        kwargs["videos"] = [golden.synth_video(n, video["width"], video["height"], video["seed"])]
        kwargs["video_metadata"] = [VideoMetadata(total_num_frames=n, fps=video["fps"], duration=n / video["fps"],
                                                  frames_indices=list(range(n)), height=video["height"], width=video["width"])]
        kwargs["do_sample_frames"] = False
    inputs = dict(proc(**kwargs))
    inputs["token_type_ids"] = inputs["token_type_ids"].long()
    return inputs


def forward_logits(original: Any, inputs: dict[str, Any]) -> Any:
    """Float64 logits [batch, seq, vocab] of one no-cache forward, as the golden data was made."""
    import torch

    with torch.no_grad():
        out = original(**inputs, use_cache=False)
    return out.logits.double()
