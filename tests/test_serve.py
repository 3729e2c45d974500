"""`vllm serve` with the shim active through its entry point only, driven by the openai client.

The server is a real process on 127.0.0.1; the prompts are chat messages, which the
checkpoint's chat template turns into exactly the golden prompts, so served ids and greedy
tokens must equal the original's.
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from lora_helpers import adapter, lora_golden
from PIL import Image

import golden
from serve_helpers import vllm_server

pytestmark = pytest.mark.engine


def png_data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    adapters = [f"{name}={adapter(name)}" for name in ("original-names", "native-names")]
    with vllm_server(tmp_path_factory.mktemp("serve"), "--enable-lora", "--max-lora-rank", "16", "--max-loras", "2",
                     "--lora-modules", *adapters) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["base"] + "/v1", api_key="unused", max_retries=0, timeout=300)


def golden_messages(name: str, image_urls: list[str]) -> list[dict]:
    text = golden.manifest()["model_cases"][name]["prompt"].split("user\n", 1)[1].split("<|im_end|>")[0]
    content = [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
    return [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]


def chat(client, messages, **kw):
    extra = {"return_token_ids": True, "ignore_eos": True, **kw.pop("extra_body", {})}
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=kw.pop("model", "molmo2-tiny"), messages=messages,
                                          max_tokens=kw.pop("max_tokens", 16), extra_body=extra, **kw)


@pytest.mark.parametrize("name", ["one_image_640x480", "two_images_300x200_500x800"])
def test_served_ids_and_greedy_tokens_equal_the_original(client, name):
    urls = [png_data_uri(im) for im in golden.model_case_images(name)]
    resp = chat(client, golden_messages(name, urls))
    z = golden.model_case(name)
    assert resp.prompt_token_ids == z["input_ids"].tolist()
    assert resp.choices[0].token_ids == z["generate_bidir"].tolist()
    assert resp.usage.prompt_tokens == len(z["input_ids"])


@pytest.mark.lora
@pytest.mark.parametrize("name", ["original-names", "native-names"])
def test_served_lora_adapter_equals_peft(client, name):
    """`--lora-modules`: the adapter is chosen by model name; ids, greedy tokens and the first
    token's top log-probs equal PEFT's on the original."""
    case = "one_image_640x480"
    urls = [png_data_uri(im) for im in golden.model_case_images(case)]
    resp = chat(client, golden_messages(case, urls), model=name, logprobs=True, top_logprobs=20,
                extra_body={"return_tokens_as_token_ids": True})
    z = lora_golden(name, case)
    assert resp.prompt_token_ids == z["input_ids"].tolist()
    assert resp.choices[0].token_ids == z["generate"].tolist()
    last = z["logits"][-1].astype(np.float64)
    expected = last - np.log(np.exp(last - last.max()).sum()) - last.max()
    first = resp.choices[0].logprobs.content[0].top_logprobs
    served = {int(t.token.removeprefix("token_id:")): t.logprob for t in first}
    assert max(abs(lp - expected[tok]) for tok, lp in served.items()) <= 1e-4


def test_local_file_image(client, server):
    name = "one_image_640x480"
    path = server["media"] / "cat.png"
    golden.model_case_images(name)[0].save(path)
    resp = chat(client, golden_messages(name, [f"file://{path}"]))
    assert resp.choices[0].token_ids == golden.model_case(name)["generate_bidir"].tolist()


def test_streaming_matches_non_streaming(client):
    name = "one_image_640x480"
    messages = golden_messages(name, [png_data_uri(golden.model_case_images(name)[0])])
    full = chat(client, messages)
    stream = chat(client, messages, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == full.choices[0].message.content


def test_n_greater_than_one_and_stop_strings(client):
    name = "one_image_640x480"
    messages = golden_messages(name, [png_data_uri(golden.model_case_images(name)[0])])
    resp = chat(client, messages, n=3, max_tokens=8, temperature=1.0, seed=7)
    assert len(resp.choices) == 3 and all(len(c.token_ids) == 8 for c in resp.choices)
    assert len({tuple(c.token_ids) for c in resp.choices}) > 1, "sampled choices should differ"
    full_text = chat(client, messages, max_tokens=16).choices[0].message.content
    stop = full_text[3:6]
    stopped = chat(client, messages, max_tokens=16, stop=[stop]).choices[0]
    assert stopped.finish_reason == "stop" and stop not in stopped.message.content


def test_text_before_and_after_the_image_still_puts_images_first(client):
    """The chat template places every image first; text parts are joined with a space."""
    image = golden.model_case_images("one_image_640x480")[0]
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": png_data_uri(image)}},
        {"type": "text", "text": "what is it?"}]}]
    resp = chat(client, messages, max_tokens=2)
    ids = resp.prompt_token_ids
    assert ids[0] == 2 and ids[1] == 516  # BOS, then the image block (<low_res_im_start>)


def test_too_many_images_get_vllms_400(client):
    import openai

    image = png_data_uri(golden.model_case_images("one_image_640x480")[0])
    with pytest.raises(openai.BadRequestError) as exc:
        chat(client, golden_messages("one_image_640x480", [image] * 3))
    assert "image" in str(exc.value).lower()


@pytest.mark.parametrize("payload", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20],
                         ids=["garbage", "truncated_png"])
def test_bad_image_gets_4xx_and_the_server_keeps_serving(client, payload):
    import openai

    uri = "data:image/png;base64," + base64.b64encode(payload).decode()
    with pytest.raises(openai.APIStatusError) as exc:
        chat(client, golden_messages("one_image_640x480", [uri]))
    assert 400 <= exc.value.status_code < 500
    name = "one_image_640x480"
    ok = chat(client, golden_messages(name, [png_data_uri(golden.model_case_images(name)[0])]))
    assert ok.choices[0].token_ids == golden.model_case(name)["generate_bidir"].tolist()


def lossless_video_uri(frames, fps: float) -> str:
    """An FFV1/AVI data URI: vLLM's OpenCV loader decodes it to exactly these frames."""
    import cv2

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clip.avi"
        height, width = frames.shape[1:3]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return "data:video/x-msvideo;base64," + base64.b64encode(path.read_bytes()).decode()


def golden_video_messages(url: str) -> list[dict]:
    name = "video_4f_320x240"
    text = golden.manifest()["model_cases"][name]["prompt"].split("user\n", 1)[1].split("<|im_end|>")[0]
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def golden_video_uri() -> str:
    v = golden.manifest()["model_cases"]["video_4f_320x240"]["sources"]["video"]
    return lossless_video_uri(golden.synth_video(v["num_frames"], v["width"], v["height"], v["seed"]), v["fps"])


def test_served_video_equals_the_original(client):
    # vLLM reads the whole clip (fewer frames than its 32-frame cap) and marks it for sampling;
    # the original's rule at max_fps=2 keeps all four frames at 0.0/0.5/1.0/1.5 s.
    resp = chat(client, golden_video_messages(golden_video_uri()))
    z = golden.model_case("video_4f_320x240")
    assert resp.prompt_token_ids == z["input_ids"].tolist()
    assert resp.choices[0].token_ids == z["generate_bidir"].tolist()


def jpeg_frames_uri() -> str:
    """vLLM's frame-list data URI: JPEG frames and no frame rate, so no timestamps."""
    frames = []
    for frame in golden.synth_video(2, 32, 24, 5):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG")
        frames.append(base64.b64encode(buf.getvalue()).decode())
    return "data:video/jpeg;base64," + ",".join(frames)


@pytest.mark.parametrize("make_url, reason", [
    (lambda: "data:video/x-msvideo;base64," + base64.b64encode(b"RIFF not a video").decode(), r"(?i)video"),
    (lambda: "data:video/jpeg;base64,", r"(?i)image|video"),
    (jpeg_frames_uri, r"positive fps"),
], ids=["undecodable", "no_frames", "frames_without_fps"])
def test_bad_video_gets_4xx_and_the_server_keeps_serving(client, make_url, reason):
    import openai

    with pytest.raises(openai.APIStatusError) as exc:
        chat(client, golden_video_messages(make_url()))
    assert 400 <= exc.value.status_code < 500
    assert re.search(reason, str(exc.value)), str(exc.value)
    ok = chat(client, golden_video_messages(golden_video_uri()))
    assert ok.choices[0].token_ids == golden.model_case("video_4f_320x240")["generate_bidir"].tolist()


def test_server_runs_the_shim_through_the_entry_point(server):
    text = server["log"].read_text()
    assert "molmo2-shim" in text or "molmo2_shim" in text
