"""Demo: vLLM with molmo2-shim on the embedded tiny Molmo2 checkpoint (CPU).

    make demo

Starts a real vLLM engine, sends one image and a question through the chat API (the
checkpoint's own chat template), prints the generated text and where each image's tokens
sit in the prompt. The tiny checkpoint has random weights, so the text is gibberish: what
matters is that it is the original model's output (see tests/fixtures/README.md).
"""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CHECKPOINT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "molmo2-tiny"


def sample_image(width: int = 640, height: int = 480) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> int:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import molmo2_shim
    from molmo2_shim.diagnostics.layout import describe, format_spans
    from molmo2_shim.processing.layout import SpecialTokenIds

    print(molmo2_shim.install())
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(CHECKPOINT), dtype="float32", enforce_eager=True, max_model_len=4096,
              limit_mm_per_prompt={"image": 2, "video": 0})
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(sample_image())}},
        {"type": "text", "text": "Describe this image."},
    ]}]
    out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))[0]
    special = SpecialTokenIds.from_tokenizer(llm.get_tokenizer())
    print("\nprompt layout (%d tokens):" % len(out.prompt_token_ids))
    print(format_spans(describe(out.prompt_token_ids, special)))
    print("\ngenerated token ids:", list(out.outputs[0].token_ids))
    print("generated text (random tiny weights):", repr(out.outputs[0].text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
