"""Bad inputs get a clear error for that request only; the next request still succeeds,
offline and through `vllm serve`. Also concurrent load against the server (small version of
benchmarks/load.py)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import golden
from bad_inputs import BAD_INPUTS, PROMPT, BadInput, encoded, image_part, rgb
from engine_helpers import SMALL_BUDGET, engine_kwargs, golden_request, greedy_params
from serve_helpers import is_healthy, vllm_server

pytestmark = pytest.mark.engine

OFFLINE = [c for c in BAD_INPUTS if c.offline]
SERVED = [c for c in BAD_INPUTS if c.served]


def test_the_suite_is_big_enough():
    assert len(BAD_INPUTS) >= 25 and len(SERVED) >= 12


@pytest.fixture(scope="module")
def llm():
    from vllm import LLM

    import molmo2_shim

    molmo2_shim.install()
    engine = LLM(**engine_kwargs(max_model_len=2048, max_num_batched_tokens=2048, limit_mm_per_prompt={"image": 2, "video": 1}))
    yield engine
    del engine


def _assert_still_serving(llm) -> None:
    out = llm.generate([golden_request("one_image_640x480")], greedy_params())[0]
    assert list(out.outputs[0].token_ids) == golden.model_case("one_image_640x480")["generate_bidir"].tolist()


@pytest.mark.parametrize("case", OFFLINE, ids=[c.name for c in OFFLINE])
def test_offline_engine(llm, case: BadInput):
    request = case.offline()
    if case.outcome == "error":
        with pytest.raises(Exception) as exc:
            llm.generate([request], greedy_params(2))
        assert re.search(case.match, f"{type(exc.value).__name__}: {exc.value}"), str(exc.value)[:500]
    else:
        out = llm.generate([request], greedy_params(2))[0]
        assert len(out.outputs[0].token_ids) == 2
    _assert_still_serving(llm)


def test_an_image_refused_after_processing_can_be_sent_again(llm):
    """A request refused after vLLM processed its image (expanded ids made for another image)
    must not leave the image recorded as sent to the engine: the same image with its own
    expanded ids afterwards is processed and served, not looked up in the engine and crashed on."""
    from bad_inputs import expanded_ids
    from molmo2_shim.processing.processor import Molmo2Processor

    image = golden.pil_image("rgb", 301, 233, 11)  # sent by no other test
    with pytest.raises(Exception, match="expanded image blocks do not match"):
        llm.generate([{"prompt_token_ids": expanded_ids("one_image_640x480"), "multi_modal_data": {"image": [image]}}],
                     greedy_params(2))
    own_ids = Molmo2Processor.from_pretrained(golden.CHECKPOINT)(text=PROMPT, images=[image])["input_ids"][0].tolist()
    out = llm.generate([{"prompt_token_ids": own_ids, "multi_modal_data": {"image": [image]}}], greedy_params(2))[0]
    assert out.prompt_token_ids == own_ids and len(out.outputs[0].token_ids) == 2
    _assert_still_serving(llm)


def test_exif_orientation_is_not_applied(llm):
    """Documented choice: like the original, the shim uses the stored pixels, not the
    orientation an EXIF tag asks a viewer to display."""
    import io

    from PIL import Image

    from bad_inputs import exif_rotated_jpeg

    stored = Image.open(io.BytesIO(exif_rotated_jpeg()))
    stored.load()
    as_stored = Image.fromarray(__import__("numpy").asarray(stored.convert("RGB")))
    a, b = llm.generate([{"prompt": PROMPT, "multi_modal_data": {"image": [stored]}},
                         {"prompt": PROMPT, "multi_modal_data": {"image": [as_stored]}}], greedy_params(4))
    assert a.prompt_token_ids == b.prompt_token_ids and a.outputs[0].token_ids == b.outputs[0].token_ids
    assert stored.size == (64, 32)  # landscape as stored; EXIF would display it portrait


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with a small step budget that lets requests it cannot compute exactly run
    (MOLMO2_SHIM_ALLOW_INEXACT=1), so they are counted on /metrics."""
    with vllm_server(tmp_path_factory.mktemp("robust"), max_model_len=2048, max_num_batched_tokens=SMALL_BUDGET,
                     env_extra={"MOLMO2_SHIM_ALLOW_INEXACT": "1"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["base"] + "/v1", api_key="unused", max_retries=0, timeout=600)


def _chat(client, content, max_tokens=2):
    return client.chat.completions.create(model="molmo2-tiny", messages=[{"role": "user", "content": content}],
                                          temperature=0, max_tokens=max_tokens, extra_body={"ignore_eos": True})


def _good_request(client) -> None:
    image = golden.model_case_images("one_image_640x480")[0]
    text = golden.manifest()["model_cases"]["one_image_640x480"]["prompt"].split("user\n", 1)[1].split("<|im_end|>")[0]
    resp = client.chat.completions.create(
        model="molmo2-tiny", temperature=0, max_tokens=16,
        messages=[{"role": "user", "content": [image_part(encoded(image)), {"type": "text", "text": text}]}],
        extra_body={"ignore_eos": True, "return_token_ids": True})
    assert resp.choices[0].token_ids == golden.model_case("one_image_640x480")["generate_bidir"].tolist()


@pytest.mark.parametrize("case", SERVED, ids=[c.name for c in SERVED])
def test_server(server, client, case: BadInput):
    import openai

    if case.outcome == "error":
        with pytest.raises(openai.APIStatusError) as exc:
            _chat(client, case.served())
        assert 400 <= exc.value.status_code < 500, exc.value
        assert re.search(case.match, str(exc.value)), str(exc.value)[:500]
    else:
        resp = _chat(client, case.served())
        assert resp.usage.completion_tokens == 2 and resp.choices[0].finish_reason == "length"
    assert is_healthy(server["base"])
    _good_request(client)


def test_concurrent_image_requests(server, client):
    """40 concurrent chat requests with images: all succeed, no engine restart."""
    pid = server["proc"].pid
    images = [encoded(rgb(64 + 8 * (i % 5), 48 + 8 * (i % 3))) for i in range(40)]

    def one(i: int) -> float:
        start = time.perf_counter()
        _chat(client, [image_part(images[i]), {"type": "text", "text": f"request {i}"}], max_tokens=4)
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=40) as pool:
        latencies = sorted(pool.map(one, range(40)))
    assert len(latencies) == 40
    assert server["proc"].poll() is None and server["proc"].pid == pid and is_healthy(server["base"])
    print(f"40 concurrent: p50 {latencies[19]:.2f}s p99 {latencies[-1]:.2f}s")


def _inexact_count(base: str) -> float:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    found = re.search(r'^vllm:molmo2_shim_inexact_requests_total\{reason="region_longer_than_a_step"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_inexact_requests_are_counted_on_metrics(server, client):
    """Two 640x480 images make a region longer than the server's step budget: with the opt-out
    the request runs, and /metrics counts it."""
    before = _inexact_count(server["base"])
    image = encoded(golden.model_case_images("one_image_640x480")[0])
    resp = _chat(client, [image_part(image), image_part(image), {"type": "text", "text": "Compare them."}])
    assert resp.usage.completion_tokens == 2
    assert _inexact_count(server["base"]) == before + 1
    _good_request(client)  # requests that fit stay exact
