"""Bad and extreme inputs, each with its documented outcome (docs/robustness.md).

Every case is a request for the offline engine (`offline`) and/or chat-message content for
`vllm serve` (`served`); `outcome` is "error" (with a regex the error text must match) or
"ok" (accepted; `check` may verify what the model saw).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

import golden

PROMPT = "<|image|><|im_start|>user\nDescribe this image.<|im_end|>\n<|im_start|>assistant\n"
QUESTION = "Describe this image."


@dataclass(frozen=True)
class BadInput:
    name: str
    outcome: str  # "error" | "ok"
    match: str = ""
    offline: Callable[[], dict[str, Any]] | None = None
    served: Callable[[], list[dict[str, Any]]] | None = None
    note: str = ""


def rgb(w: int, h: int) -> Image.Image:
    return golden.pil_image("rgb", w, h, 7)


def encoded(image: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def data_uri(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode()


def image_part(payload: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_uri(payload, mime)}}


def one(image: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, "multi_modal_data": {"image": [image]}}


def served(*images: Callable[[], bytes], text: str = QUESTION, mime: str = "image/png") -> Callable[[], list[dict[str, Any]]]:
    """Chat content built when the test runs (some payloads are large or slow to encode)."""
    return lambda: [*(image_part(make(), mime) for make in images), {"type": "text", "text": text}]


def lazy(payload: bytes) -> Image.Image:
    """An image opened but not decoded, as PIL hands out files (decoding happens later)."""
    return Image.open(io.BytesIO(payload))


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise when displayed
    return encoded(rgb(64, 32), "JPEG", exif=exif, quality=95)


def cmyk_jpeg() -> bytes:
    return encoded(rgb(80, 60).convert("CMYK"), "JPEG", quality=95)


def png16() -> bytes:
    arr = golden.synth_gray(50, 40, 3).astype(np.uint16) * 257
    return encoded(Image.fromarray(arr))  # mode I;16


def video(frames: np.ndarray, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = meta or {"fps": 2.0, "frames_indices": list(range(len(frames)))}
    return {"prompt": "<|video|>What happens?", "multi_modal_data": {"video": (frames, meta)}}


def truncated(payload: bytes) -> bytes:
    return payload[: len(payload) // 3]


def expanded_ids(name: str) -> list[int]:
    return golden.model_case(name)["input_ids"].tolist()


BAD_INPUTS: list[BadInput] = [
    BadInput("undecodable_bytes", "error", r"(?i)image|decode|identify",
             served=served(lambda: b"definitely not an image"), note="4xx from vLLM's media loader"),
    BadInput("truncated_png", "error", r"(?i)decode|truncated|image",
             offline=lambda: one(lazy(truncated(encoded(rgb(300, 200))))),
             served=served(lambda: truncated(encoded(rgb(300, 200))))),
    BadInput("truncated_jpeg", "error", r"(?i)decode|truncated|image",
             offline=lambda: one(lazy(truncated(encoded(rgb(300, 200), "JPEG")))),
             served=served(lambda: truncated(encoded(rgb(300, 200), "JPEG")), mime="image/jpeg")),
    BadInput("zero_width", "error", r"zero size", offline=lambda: one(Image.new("RGB", (0, 10)))),
    BadInput("zero_by_zero", "error", r"zero size", offline=lambda: one(Image.new("RGB", (0, 0)))),
    BadInput("zero_rows_array", "error", r"zero size", offline=lambda: one(np.zeros((0, 7, 3), np.uint8))),
    BadInput("one_by_one", "ok", offline=lambda: one(rgb(1, 1)), served=served(lambda: encoded(rgb(1, 1)))),
    BadInput("tall_1x10000", "ok", offline=lambda: one(rgb(1, 10000)), served=served(lambda: encoded(rgb(1, 10000)))),
    BadInput("wide_10000x1", "ok", offline=lambda: one(rgb(10000, 1)), served=served(lambda: encoded(rgb(10000, 1)))),
    BadInput("decompression_bomb_200mp", "error", r"(?i)decompression|bomb|pixels",
             offline=lambda: one(Image.new("L", (14143, 14143))),
             served=served(lambda: encoded(Image.new("L", (14143, 14143)), compress_level=1)),
             note="PIL's limit (2x its warning threshold, 178,956,970 pixels)"),
    BadInput("grayscale", "ok", offline=lambda: one(golden.pil_image("gray", 300, 200, 1)),
             served=served(lambda: encoded(golden.pil_image("gray", 300, 200, 1)))),
    BadInput("rgba", "ok", offline=lambda: one(golden.pil_image("rgba", 256, 192, 1)),
             served=served(lambda: encoded(golden.pil_image("rgba", 256, 192, 1))),
             note="offline: alpha dropped as the original; served: vLLM's loader composites on white"),
    BadInput("cmyk_jpeg", "ok", offline=lambda: one(lazy(cmyk_jpeg())), served=served(lambda: cmyk_jpeg(), mime="image/jpeg")),
    BadInput("png_16_bit", "ok", offline=lambda: one(lazy(png16())), served=served(lambda: png16())),
    BadInput("palette", "ok", offline=lambda: one(rgb(120, 90).convert("P")), served=served(lambda: encoded(rgb(120, 90).convert("P")))),
    BadInput("exif_rotated_jpeg", "ok", offline=lambda: one(lazy(exif_rotated_jpeg())),
             served=served(lambda: exif_rotated_jpeg(), mime="image/jpeg"),
             note="EXIF orientation is not applied, as in the original (and vLLM's loader)"),
    BadInput("too_many_images", "error", r"(?i)at most 2 image|limit",
             offline=lambda: {"prompt": "hi", "multi_modal_data": {"image": [rgb(40, 40)] * 3}},
             served=served(*[lambda: encoded(rgb(40, 40))] * 3)),
    BadInput("placeholders_not_matching_images", "error", r"2 '<\|image\|>' placeholders",
             offline=lambda: {"prompt": "<|image|><|image|>hi", "multi_modal_data": {"image": [rgb(40, 40)]}}),
    BadInput("literal_im_patch_in_text", "error", r"image special token",
             offline=lambda: {"prompt": PROMPT.replace("Describe", "<im_patch> Describe"), "multi_modal_data": {"image": [rgb(40, 40)]}},
             served=served(lambda: encoded(rgb(40, 40)), text="say <im_patch> twice")),
    BadInput("literal_im_col_text_only", "error", r"image special token",
             offline=lambda: {"prompt": "hello <im_col> world"}),
    BadInput("literal_image_placeholder_without_image", "ok", offline=lambda: {"prompt": "Look: <|image|>"},
             note="stays a literal token, as in the original processor"),
    BadInput("prompt_longer_than_max_model_len", "error", r"(?i)longer than|maximum model length|max_model_len",
             offline=lambda: {"prompt": "Image 1<|image|>Image 2<|image|>hi", "multi_modal_data": {"image": [rgb(1920, 1080)] * 2}},
             served=served(lambda: encoded(rgb(1920, 1080)), lambda: encoded(rgb(1920, 1080)))),
    BadInput("empty_video", "error", r"no frames", offline=lambda: video(np.zeros((0, 32, 32, 3), np.uint8))),
    BadInput("video_longer_than_max_model_len", "error", r"30 frames expand to at least .* max_model_len=2048",
             offline=lambda: video(golden.synth_video(30, 32, 24, 1), {"fps": 2.0, "frames_indices": list(range(30))}),
             note="checked before the frames are resized"),
    BadInput("video_over_the_frame_limit", "error", r"at most 384",
             offline=lambda: video(np.zeros((385, 8, 8, 3), np.uint8), {"fps": 2.0, "frames_indices": list(range(385))})),
    BadInput("video_metadata_mismatch", "error", r"frame indices",
             offline=lambda: video(golden.synth_video(3, 40, 30, 1), {"fps": 2.0, "frames_indices": [0, 1]})),
    BadInput("image_and_video_in_one_prompt", "error", r"images or one video per prompt, not both",
             offline=lambda: {"prompt": "<|image|><|video|>What happens?", "multi_modal_data": {
                 "image": [rgb(64, 48)],
                 "video": (golden.synth_video(2, 40, 30, 1), {"fps": 2.0, "frames_indices": [0, 1]})}}),
    BadInput("nan_in_float_image", "error", r"NaN or inf",
             offline=lambda: one(np.full((20, 20, 3), np.nan, np.float32))),
    BadInput("inf_in_tensor_image", "error", r"NaN or inf",
             offline=lambda: one(__import__("torch").full((3, 20, 20), float("inf")))),
    BadInput("int64_array_image", "error", r"dtype int64", offline=lambda: one(np.zeros((20, 20, 3), np.int64))),
    BadInput("float_image_out_of_range", "ok", offline=lambda: one(np.full((20, 20, 3), 2.0, np.float32)),
             note="clipped to [0, 1] after resizing, as the original"),
    BadInput("token_id_out_of_vocabulary", "error", r"(?i)out of vocabulary|out of range|vocab",
             offline=lambda: {"prompt_token_ids": [2, 99999, 5]}),
    BadInput("truncated_expanded_block", "error", r"image special token|expanded image blocks",
             offline=lambda: {"prompt_token_ids": expanded_ids("one_image_640x480")[:400] + expanded_ids("one_image_640x480")[401:],
                              "multi_modal_data": {"image": golden.model_case_images("one_image_640x480")}}),
    BadInput("expanded_block_for_another_image", "error", r"expanded image blocks do not match",
             offline=lambda: {"prompt_token_ids": expanded_ids("one_image_640x480"),
                              "multi_modal_data": {"image": [rgb(378, 378)]}}),
]
