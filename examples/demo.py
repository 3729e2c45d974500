"""Demo: vLLM with molmo2-shim on the embedded tiny Molmo2 checkpoint (CPU).

    make demo                  (or: python examples/demo.py [--verbose] inside `make env`)

Starts a real vLLM engine, sends the golden one-image case through vLLM's chat API (an image
and a question, the checkpoint's own chat template) and compares what comes back with the
output of the ORIGINAL Molmo2 implementation on the same input (tests/fixtures/golden): the
prompt's token ids, where the image's tokens sit, the 16 greedy tokens and the log-probability
of each. The tiny checkpoint has random weights, so its text is gibberish; what matters is that
it is the original model's gibberish.

vLLM's own start-up logs go to a file (its path is printed); --verbose shows them instead.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import golden  # noqa: E402  (the fixtures' reader: the tiny checkpoint and the original's outputs)

CASE = "one_image_640x480"


def say(text: str) -> None:
    os.write(_terminal, (text + "\n").encode())


@contextlib.contextmanager
def engine_output_to(log_path: Path | None) -> Iterator[None]:
    """Send this process's and its children's stdout/stderr (vLLM, IPEX, gloo) to a file."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verbose", action="store_true", help="show vLLM's own logs instead of writing them to a file")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_path = None if args.verbose else Path(tempfile.gettempdir()) / "molmo2-shim-demo.log"
    if log_path is not None:
        log_path.write_text("")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    say("molmo2-shim demo: vLLM + the shim on the embedded tiny Molmo2 checkpoint (CPU, float32)")
    say(f"[1/3] starting a vLLM engine (about 30 s){'' if log_path is None else f'; its logs go to {log_path}'}")
    started = time.time()
    with engine_output_to(log_path):
        import molmo2_shim
        from molmo2_shim.diagnostics.layout import describe, format_spans
        from molmo2_shim.processing.layout import SpecialTokenIds

        status = molmo2_shim.install()
        from vllm import LLM, SamplingParams

        llm = LLM(model=str(golden.CHECKPOINT), dtype="float32", enforce_eager=True, max_model_len=4096,
                  limit_mm_per_prompt={"image": 2, "video": 0}, max_logprobs=1)
    say(f"      ready in {time.time() - started:.0f} s: {status}")

    say("[2/3] one 640x480 image and 'Describe this image.' through the chat API")
    (image,) = golden.model_case_images(CASE)
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(image)}},
        {"type": "text", "text": "Describe this image."},
    ]}]
    with engine_output_to(log_path):
        out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=0))[0]
        tokenizer = llm.get_tokenizer()

    say("[3/3] compared with the original implementation's output on the same input (tests/fixtures/golden)")
    reference = golden.model_case(CASE)
    ids = list(out.prompt_token_ids)
    want_ids = reference["input_ids"].tolist()
    special = SpecialTokenIds.from_tokenizer(tokenizer)
    say(f"\nprompt: {len(ids)} tokens")
    say(format_spans(describe(ids, special)))
    tokens = list(out.outputs[0].token_ids)
    want_tokens = reference["generate_bidir"].tolist()
    logits = reference["logits_bidir"][-1].astype(np.float64)  # the original's logits at the last prompt position
    first = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    got_first = out.outputs[0].logprobs[0][tokens[0]].logprob
    say(f"\ngenerated (random tiny weights): {out.outputs[0].text!r}")
    say(f"prompt token ids equal the original processor's: {ids == want_ids}")
    say(f"16 greedy tokens equal the original model's:     {tokens == want_tokens}")
    say(f"log-prob of the first token: vLLM {got_first:.5f}, original {first[tokens[0]]:.5f}")
    ok = ids == want_ids and tokens == want_tokens and abs(got_first - first[tokens[0]]) < 1e-3
    say("\n" + ("OK: vLLM with molmo2-shim reproduces the original Molmo2 on this input."
                if ok else "MISMATCH: see the lines above; run `molmo2-shim doctor`."))
    return 0 if ok else 1


_terminal = os.dup(1)

if __name__ == "__main__":
    sys.exit(main())
