"""`molmo2-shim check-prompt`: run vLLM's real multimodal processing for one prompt (CPU, no
weights, no engine) and report what the model will see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .layout import describe, format_spans
from .signatures import explain


@dataclass
class PromptReport:
    ok: bool
    shape: str = ""
    vllm_version: str = ""
    num_tokens: int = 0
    max_model_len: int = 0
    images: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    original_num_tokens: int | None = None
    first_difference: int | None = None
    difference_note: str = ""
    error: str = ""
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_images(paths: Sequence[str]) -> list[Any]:
    from PIL import Image

    images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            images.append(im.copy())
    return images


def _vllm_processor(model_dir: str, num_images: int, max_model_len: int | None) -> Any:
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from ..activation.installer import install

    install()
    kwargs: dict[str, Any] = {"model": model_dir, "tokenizer": model_dir, "limit_mm_per_prompt": {"image": max(num_images, 1), "video": 1}}
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    config = ModelConfig(**kwargs)
    return config, MULTIMODAL_REGISTRY.create_processor(config)


def check_prompt(model_dir: str, image_paths: Sequence[str], prompt: str | None = None,
                 prompt_ids: Sequence[int] | None = None, max_model_len: int | None = None) -> PromptReport:
    import vllm

    from ..processing.layout import insert_bos
    from ..processing.processor import Molmo2Processor
    from ..processing.prompt import first_difference, normalize_prompt

    report = PromptReport(ok=False, vllm_version=str(vllm.__version__))
    try:  # every failure, setup included, becomes a report rather than a traceback
        images = _load_images(image_paths)
        config, processor = _vllm_processor(str(Path(model_dir)), len(images), max_model_len)
        report.max_model_len = int(config.max_model_len)
        tokenizer = processor.info.get_tokenizer()
        original = Molmo2Processor.from_pretrained(model_dir, tokenizer=tokenizer)
        ids = original.tokenize(prompt) if prompt is not None else list(prompt_ids or [])
        report.shape = normalize_prompt(ids, len(images), 0, original.special,
                                        lambda i: original.tokenize(f"Image {i}")).shape
        mm = {"image": images} if images else {}
        out = processor.apply(prompt if prompt is not None else list(ids), mm, {})
    except Exception as exc:
        return _failed(report, exc)
    final = list(out["prompt_token_ids"])
    report.token_ids = final
    report.num_tokens = len(final)
    spans = describe(final, original.special)
    report.spans = [s.as_dict() for s in spans]
    report.images = [dict(index=i + 1, start=s.start, end=s.end, tokens=s.length, **s.detail)
                     for i, s in enumerate(x for x in spans if x.kind == "image")]
    text = prompt if prompt is not None else tokenizer.decode(ids)
    expected = original(text=text, images=images or None)["input_ids"][0].tolist()
    expected = insert_bos(expected, original.special.bos)
    report.original_num_tokens = len(expected)
    report.first_difference = first_difference(final, expected)
    if report.first_difference is not None and report.shape == "no-placeholders":
        report.difference_note = (
            "expected: the original processor adds no image tokens for a prompt without '<|image|>' (and its model "
            "then fails); the shim puts the images first, as the chat template would"
        )
    report.ok = report.num_tokens <= report.max_model_len and (report.first_difference is None or bool(report.difference_note))
    if report.num_tokens > report.max_model_len:
        report.error = (f"the prompt has {report.num_tokens} tokens after image expansion, over max_model_len "
                        f"{report.max_model_len}: raise --max-model-len or send fewer/smaller images")
    return report


def _failed(report: PromptReport, exc: Exception) -> PromptReport:
    text = f"{type(exc).__name__}: {exc}"
    report.error = text
    report.diagnoses = [d.as_dict() for d in explain(text)]
    return report


def format_report(r: PromptReport) -> str:
    lines = [f"vLLM {r.vllm_version}"]
    if r.error and not r.num_tokens:
        lines.append(f"FAILED: {r.error}")
        for d in r.diagnoses:
            lines += [f"  cause: {d['cause']}", f"  fix:   {d['fix']}"]
        return "\n".join(lines)
    lines.append(f"prompt shape: {r.shape}")
    lines.append(f"tokens: {r.num_tokens} of max_model_len {r.max_model_len}")
    for im in r.images:
        lines.append(f"image {im['index']}: tokens [{im['start']}, {im['end']}) = {im['tokens']} "
                     f"({im['patch_tokens']} get image features; high-res grid {im['high_res'][0]}x{im['high_res'][1]})")
    lines.append("layout:")
    from .layout import Span

    lines.append(format_spans([Span(s["kind"], s["start"], s["end"], s["detail"]) for s in r.spans], limit=40))
    if r.first_difference is None:
        lines.append(f"matches the original processor's ids ({r.original_num_tokens} tokens)")
    else:
        lines.append(f"first difference from the original processor at token {r.first_difference} "
                     f"(original: {r.original_num_tokens} tokens){': ' + r.difference_note if r.difference_note else ''}")
    if r.error:
        lines.append(f"PROBLEM: {r.error}")
    return "\n".join(lines)
