"""A checkpoint with the other processor layout flags, served by a real engine.

The released checkpoints and the golden ones share one set of processor_config.json flags. This
copy of the tiny checkpoint flips every flag; the engine must still start (profiling builds
the largest video its limits allow) and lay image and video tokens out as the original's
processor does for those flags (layout written out by hand from the original's rules).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import golden
from engine_helpers import engine_kwargs

pytestmark = pytest.mark.engine

FLAGS = {
    "image_use_col_tokens": False,
    "use_single_crop_col_tokens": True,
    "use_single_crop_start_token": False,
    "video_use_col_tokens": True,
    "use_frame_special_tokens": True,
}


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    path = tmp_path_factory.mktemp("variant") / "molmo2-tiny-flags"
    shutil.copytree(golden.CHECKPOINT, path)
    processor_config = json.loads((path / "processor_config.json").read_text())
    (path / "processor_config.json").write_text(json.dumps({**processor_config, **FLAGS}))
    config = json.loads((path / "config.json").read_text())
    config["use_frame_special_tokens"] = True
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def llm(variant):
    from vllm import LLM

    import molmo2_shim

    molmo2_shim.install()
    # A short context, so the profiling video is cut to what fits (and must fit).
    engine = LLM(**engine_kwargs(model=str(variant), max_model_len=2048, max_num_batched_tokens=2048))
    yield engine
    del engine


@pytest.fixture(scope="module")
def tok(variant):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(variant))


def ids_of(tok, *tokens: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def text_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def prompt_ids(llm, request) -> list[int]:
    from vllm import SamplingParams

    out = llm.generate([request], SamplingParams(max_tokens=2, temperature=0), use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 2
    return list(out.prompt_token_ids)


def test_video_frames_use_frame_tokens_and_row_columns(llm, tok):
    bos = int(golden.model_case("text_only")["input_ids"][0])
    patch, col, frame_start, frame_end = ids_of(tok, "<im_patch>", "<im_col>", "<frame_start>", "<frame_end>")
    frames = golden.synth_video(2, 32, 24, 3)
    got = prompt_ids(llm, {"prompt": "<|video|>Hi", "multi_modal_data": {
        "video": (frames, {"fps": 2.0, "frames_indices": [0, 1]})}})
    frame = [frame_start, *([patch] * 9 + [col]) * 9, frame_end]  # 27x27 patches pooled 3x3
    expected = [bos, *text_ids(tok, "0.0 "), *frame, *text_ids(tok, " 0.5 "), *frame, *text_ids(tok, "Hi")]
    assert got == expected


def test_image_columns_and_start_tokens_follow_the_flags(llm, tok):
    bos = int(golden.model_case("text_only")["input_ids"][0])
    patch, col, start, end = ids_of(tok, "<im_patch>", "<im_col>", "<im_start>", "<im_end>")
    case = golden.manifest()["processor_cases"]["images"]["rgb_640x480"]
    low_rows, low_cols, rows, cols = case["image_grids"][0]  # from the original processor
    got = prompt_ids(llm, {"prompt": "<|image|>Hi", "multi_modal_data": {"image": golden.pil_image("rgb", 640, 480, 5)}})
    block = [start, *([patch] * low_cols + [col]) * low_rows, end, start, *[patch] * (cols * rows), end]
    assert got == [bos, *block, *text_ids(tok, "Hi")]


def test_video_too_long_for_the_context_is_refused_and_the_engine_keeps_serving(llm, tok):
    frames = np.zeros((30, 16, 16, 3), np.uint8)  # 30 x (83 + 9 columns) tokens > 2048
    with pytest.raises(ValueError, match="max_model_len=2048"):
        prompt_ids(llm, {"prompt": "<|video|>Hi", "multi_modal_data": {
            "video": (frames, {"fps": 2.0, "frames_indices": list(range(30))})}})
    assert prompt_ids(llm, {"prompt": "Hi"})[1:] == text_ids(tok, "Hi")
