"""Known vLLM / Molmo2 failure signatures (vLLM 0.10 - 0.15 wording), with cause and fix.

Each signature is a regular expression over an error message or a whole log; the first
matches win in the order below (specific before generic). Texts are matched case-insensitively
and across line breaks, since logs wrap and prefix lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnosis:
    key: str
    title: str
    cause: str
    fix: str
    matched: str = ""
    facts: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "title": self.title, "cause": self.cause, "fix": self.fix,
                "matched": self.matched, "facts": self.facts}


@dataclass(frozen=True)
class Signature:
    key: str
    pattern: re.Pattern[str]
    title: str
    explain: Callable[[re.Match[str]], tuple[str, str]]  # -> (cause, fix)


def _sig(key: str, pattern: str, title: str, explain: Callable[[re.Match[str]], tuple[str, str]]) -> Signature:
    return Signature(key, re.compile(pattern, re.IGNORECASE | re.DOTALL), title, explain)


ACTIVATE = (
    "Activate molmo2-shim in every vLLM process: keep its entry point (pip install molmo2-shim; if "
    "VLLM_PLUGINS is set it must include `molmo2_shim`), or import `molmo2_shim.auto` / call "
    "`molmo2_shim.install()` before building the engine. Check with `molmo2-shim doctor`."
)


def _placeholders(m: re.Match[str]) -> tuple[str, str]:
    expected, modality, found = m.group("n"), m.group("modality"), m.group("found")
    if found == "0":
        cause = (
            f"vLLM was given {expected} {modality} item(s) but found no '<|{modality}|>' placeholder in the prompt "
            "after processing. Either the model is not served by molmo2-shim (vLLM's native Molmo2 >= 0.15 or another "
            "port needs the placeholders: verl-agent sends prompts without them), or the HF processor was trusted to "
            "expand placeholders it did not expand."
        )
    else:
        cause = (
            f"{expected} {modality} item(s) but {found} placeholder(s) matched: the prompt's '<|{modality}|>' count "
            "(or already-expanded image blocks) does not match the items sent."
        )
    fix = (
        f"Send one '<|{modality}|>' per item (the checkpoint's chat template writes them), or use molmo2-shim, which "
        "also accepts prompts with no placeholder and HF-expanded ids. " + ACTIVATE
        + " Run `molmo2-shim check-prompt MODEL --image ... --prompt ...` to see what the prompt becomes."
    )
    return cause, fix


SIGNATURES: list[Signature] = [
    _sig(
        "shim-input",
        r"Molmo2InputError:?\s*(?P<msg>[^\n]+)",
        "molmo2-shim refused a request",
        lambda m: (m.group("msg").strip(), "Fix the request as the message says; other requests are unaffected."),
    ),
    _sig(
        "placeholders-missing",
        r"Expected there to be (?P<n>\d+) prompt (?:placeholders|updates) corresponding to \d+ (?P<modality>\w+) "
        r"items?, but instead found (?P<found>\d+) prompt (?:placeholders|updates)",
        "Prompt placeholders do not match the multimodal items",
        _placeholders,
    ),
    _sig(
        "prompt-replacement-failed",
        r"Failed to apply prompt replacement for mm_items\[['\"](?P<modality>\w+)['\"]\]\[(?P<idx>\d+)\]",
        "vLLM could not find where to put a multimodal item",
        lambda m: (
            f"The prompt has no target for {m.group('modality')} item {m.group('idx')}: its placeholder token is "
            "absent (e.g. verl-agent's placeholder-free prompts on a port that needs placeholders), or a port's "
            "PromptIndexTargets.prefix(...) did not match the prompt's first tokens.",
            f"Put '<|{m.group('modality')}|>' in the prompt for each item, or serve with molmo2-shim, which places "
            "items first when the prompt has no placeholder. " + ACTIVATE,
        ),
    ),
    _sig(
        "architecture-not-supported",
        r"Model architectures \[?['\"]?Molmo2ForConditionalGeneration['\"]?\]? (?:are|is) not supported",
        "vLLM does not know Molmo2ForConditionalGeneration in this process",
        lambda m: (
            "No Molmo2 is registered in the process that builds the model. On vLLM < 0.15 only molmo2-shim registers "
            "it; registration done in another process (a driver, a Ray TaskRunner) does not reach vLLM's engine core "
            "and workers, and VLLM_PLUGINS may exclude the shim's entry point.",
            ACTIVATE,
        ),
    ),
    _sig(
        "architecture-inspection-failed",
        r"Model architectures \[?['\"]?Molmo2ForConditionalGeneration['\"]?\]? failed to be inspected|"
        r"Error in inspecting model architecture ['\"]?Molmo2ForConditionalGeneration",
        "vLLM's inspection child could not import the Molmo2 model class",
        lambda m: (
            "vLLM imports registered model classes in a fresh `python -m vllm.model_executor.models.registry` child. "
            "That child failed: the module is not importable from a fresh interpreter (installed in another "
            "environment, only on sys.path of the parent) or raised while importing.",
            "pip install molmo2-shim into the environment vLLM runs in (not just PYTHONPATH of one process); "
            "the shim's registered module imports cleanly on its own. Run `molmo2-shim doctor` to test a fresh child.",
        ),
    ),
    _sig(
        "remote-code-required",
        r"(?:contains custom code which must be executed|model type [`'\"]?molmo2[`'\"]? but Transformers does not "
        r"recognize this architecture|trust_remote_code=True.{0,200}molmo2|molmo2.{0,300}trust_remote_code)",
        "The Molmo2 config needs remote code because the shim is not active",
        lambda m: (
            "transformers < 5 does not know model_type 'molmo2'. molmo2-shim registers a built-in config and "
            "processor, but it is not active in this process (VLLM_PLUGINS excludes it, MOLMO2_SHIM_DISABLE is set, "
            "or it is not installed).",
            ACTIVATE + " (trust_remote_code=True also works but runs the hub's code and needs its .py files.)",
        ),
    ),
    _sig(
        "legacy-batching-warning",
        r"legacy code for batching multi-modal kwargs is deprecated",
        "Harmless deprecation warning",
        lambda m: (
            "The model class leaves merge_by_field_config=False, so vLLM 0.11.1-0.12 batches multimodal kwargs the "
            "old way. molmo2-shim's model sets it; seeing this means another Molmo2 port is loaded.",
            "Nothing to do for correctness. With molmo2-shim active the warning disappears; `molmo2-shim doctor` "
            "shows which class serves the architecture.",
        ),
    ),
    _sig(
        "native-logprobs-oob",
        r"index (?P<idx>\d+) is out of bounds for dimension 1 with size (?P<size>\d+)",
        "Out-of-range token id in logprobs (vLLM native Molmo2 bug)",
        lambda m: (
            f"Token id {m.group('idx')} lies past the {m.group('size')} logits the model returns. Molmo2's image "
            "special tokens are past the LM head; vLLM's native Molmo2 (>= 0.15) crashes the engine when prompt "
            "logprobs or penalties touch image-prompt tokens.",
            "Use molmo2-shim's model (MOLMO2_SHIM_OVERRIDE_NATIVE=1 on vLLM >= 0.15 once an exact adapter exists, or "
            "vLLM 0.11-0.14 with the shim), which gives every tokenizer id a logit; or drop prompt_logprobs.",
        ),
    ),
    _sig(
        "mm-count-mismatch",
        r"Attempted to assign (?P<expr>.+?) = (?P<got>\d+) multimodal tokens to (?P<want>\d+) placeholders",
        "Image features and image positions disagree",
        lambda m: (
            f"The encoder returned {m.group('got')} feature rows for {m.group('want')} placeholder positions: the "
            "prompt's image blocks were expanded for a different image size or processor setting than the images sent.",
            "Send '<|image|>' placeholders (or no placeholder) instead of pre-expanded ids, or expand with the same "
            "checkpoint's processor; molmo2-shim verifies expanded blocks and says which one differs.",
        ),
    ),
    _sig(
        "unsupported-vllm",
        r"UnsupportedVLLMVersionError:?\s*(?P<msg>[^\n]+)|vLLM (?P<ver>[\w.+-]+) is not (?:supported by|covered by) molmo2-shim",
        "This vLLM version is outside molmo2-shim's matrix",
        lambda m: (
            (m.group("msg") or f"vLLM {m.group('ver')} is not covered by compat_matrix.yaml.").strip(),
            "Install a supported vLLM (see the README's compatibility table), e.g. pip install 'vllm==0.11.2'.",
        ),
    ),
    _sig(
        "engine-dead",
        r"EngineDeadError|Engine core proc \S+ died unexpectedly",
        "The vLLM engine process died",
        lambda m: (
            "The engine core crashed; the real cause is earlier in the log (the first traceback from the "
            "EngineCore process).",
            "Run `molmo2-shim explain` on the whole log to find the root cause.",
        ),
    ),
]


def explain(text: str) -> list[Diagnosis]:
    """Every known signature found in `text`, most specific first; [] when none matches."""
    found: list[Diagnosis] = []
    seen: set[str] = set()
    for sig in SIGNATURES:
        m = sig.pattern.search(text)
        if not m or sig.key in seen:
            continue
        seen.add(sig.key)
        cause, fix = sig.explain(m)
        facts = {k: v for k, v in m.groupdict().items() if v}
        found.append(Diagnosis(sig.key, sig.title, cause, fix, m.group(0)[:300], facts))
    if len(found) > 1:
        found = [d for d in found if d.key != "engine-dead"]
    return found
