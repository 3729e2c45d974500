"""`molmo2-shim doctor`: is the shim active where vLLM needs it, and is the checkpoint sane?"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..activation.installer import ENV_DISABLE, ENV_OVERRIDE_NATIVE, active_patch_set
from ..processing.layout import CONFIG_ID_FIELDS, TOKEN_STRINGS, LayoutFlags

PLUGIN_NAME = "molmo2_shim"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: information only
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_checks() -> list[Check]:
    checks = [Check("platform", None, f"Python {platform.python_version()} on {platform.platform()}")]
    try:
        import vllm

        vllm_version = str(vllm.__version__)
    except ImportError:
        vllm_version = ""
    versions = {
        "molmo2-shim": _version("molmo2-shim"),
        "vllm (vllm.__version__)": vllm_version or None,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
    }
    checks.append(Check("versions", None, ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items())))
    if not vllm_version:
        checks.append(Check("vllm", False, "vLLM is not importable here", "pip install a supported vLLM, e.g. vllm==0.11.2"))
        return checks
    from ..activation.matrix import lookup

    try:
        match = lookup(vllm_version)
    except Exception as exc:  # typed errors carry the supported ranges
        checks.append(Check("compat matrix", False, str(exc), "install a vLLM version from the README's table"))
        return checks
    row = match.row
    does = {"supported": f"registers its Molmo2 (patch set {row.patch_set})",
            "native": "stands down: vLLM's own Molmo2 serves the model",
            "unsupported": "refuses: " + (row.reason or "")}[row.status]
    checks.append(Check("compat matrix", row.status != "unsupported", f"row {row.name} ({row.status}): the shim {does}",
                        "" if row.status != "unsupported" else "install a supported vLLM"))
    override = os.environ.get(ENV_OVERRIDE_NATIVE, "").strip().lower() in ("1", "true", "yes", "on")
    chosen = active_patch_set(match, override)
    if chosen is not None:
        checks += catalog_checks(chosen)
    return checks


def catalog_checks(chosen: Any) -> list[Check]:
    """The patch catalog's entries for this vLLM, each with whether its target exists here."""
    from ..patches.catalog import resolve

    checks = [Check("patch set", None, f"{chosen.name}: {chosen.api} ({len(chosen.entries)} catalog entries, "
                                       "patches/README.md says why each exists)")]
    for entry in chosen.entries:
        try:
            resolve(entry.target)
        except Exception as exc:
            checks.append(Check(f"  {entry.kind}", False, f"{entry.name}: {entry.target} is missing here ({exc})",
                                "this vLLM build differs from the one the patch set was written for; report it"))
        else:
            checks.append(Check(f"  {entry.kind}", True, f"{entry.name}: {entry.target}"))
    return checks


def plugin_checks() -> list[Check]:
    checks = []
    eps = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.name == PLUGIN_NAME]
    checks.append(Check("entry point", bool(eps), f"vllm.general_plugins:{PLUGIN_NAME} -> {eps[0].value}" if eps else
                        "molmo2-shim's vllm.general_plugins entry point is not installed",
                        "" if eps else "pip install molmo2-shim in this environment (an editable install works too)"))
    plugins = os.environ.get("VLLM_PLUGINS")
    if plugins is None:
        checks.append(Check("VLLM_PLUGINS", True, "unset: vLLM loads every installed plugin"))
    else:
        names = [p.strip() for p in plugins.split(",") if p.strip()]
        ok = PLUGIN_NAME in names
        checks.append(Check("VLLM_PLUGINS", ok, f"VLLM_PLUGINS={plugins!r}",
                            "" if ok else f"add `{PLUGIN_NAME}` to VLLM_PLUGINS (vLLM loads only the plugins it lists)"))
    if os.environ.get(ENV_DISABLE):
        checks.append(Check(ENV_DISABLE, False, f"{ENV_DISABLE}={os.environ[ENV_DISABLE]!r} turns the entry point off",
                            f"unset {ENV_DISABLE}"))
    if os.environ.get(ENV_OVERRIDE_NATIVE):
        checks.append(Check(ENV_OVERRIDE_NATIVE, None, f"{ENV_OVERRIDE_NATIVE} is set: the shim replaces native Molmo2"))
    return checks


CHILD_PROBE = (
    "import json\n"
    "from vllm.plugins import load_general_plugins\n"
    "load_general_plugins()\n"
    "from vllm.model_executor.models import ModelRegistry\n"
    "e = ModelRegistry.models.get('Molmo2ForConditionalGeneration')\n"
    "print('PROBE ' + json.dumps(getattr(e, 'module_name', None) or getattr(getattr(e, 'model_cls', None), '__module__', None)))\n"
)


def registration_checks(timeout: float = 300.0) -> list[Check]:
    """Registration as a fresh vLLM child process sees it (the engine core and workers start so)."""
    proc = subprocess.run([sys.executable, "-c", CHILD_PROBE], capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-800:]
        return [Check("fresh vLLM process", False, f"the probe failed: {tail}", "run `molmo2-shim explain` on that output")]
    module = json.loads(lines[-1][len("PROBE "):])
    if module and str(module).startswith("molmo2_shim"):
        return [Check("fresh vLLM process", True, f"Molmo2ForConditionalGeneration -> {module} (via the entry point)")]
    if module:
        return [Check("fresh vLLM process", None, f"Molmo2ForConditionalGeneration -> {module} (vLLM's own; the shim stands down)")]
    return [Check("fresh vLLM process", False,
                  "a fresh vLLM process does not know Molmo2ForConditionalGeneration: engine cores and workers vLLM "
                  "spawns will fail with 'Model architectures [...] are not supported'",
                  "keep the entry point enabled (see the checks above); in-process install() does not reach them")]


def model_checks(model_dir: str) -> list[Check]:
    path = Path(model_dir)
    config_file = path / "config.json"
    if not config_file.is_file():
        return [Check("model dir", False, f"{path} has no config.json", "point doctor at a local checkpoint folder")]
    config = json.loads(config_file.read_text())
    checks = [Check("model type", config.get("model_type") == "molmo2",
                    f"model_type={config.get('model_type')!r}, architectures={config.get('architectures')}",
                    "" if config.get("model_type") == "molmo2" else "this is not a Molmo2 checkpoint")]
    checks.append(Check("dtype", None, f"checkpoint dtype {config.get('dtype') or config.get('torch_dtype')}; "
                        "vLLM serves bfloat16 unless --dtype is given"))
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
        vocab = tok.get_vocab()
    except Exception as exc:
        return checks + [Check("tokenizer", False, f"cannot load the tokenizer: {exc}", "use the checkpoint's tokenizer files")]
    missing = [s for s in TOKEN_STRINGS.values() if s not in vocab]
    checks.append(Check("special tokens", not missing,
                        "all Molmo2 image/video tokens present" if not missing else f"missing from the tokenizer: {missing}",
                        "" if not missing else "use the checkpoint's own tokenizer; Molmo2 needs every image token"))
    mismatched = []
    for key, field in CONFIG_ID_FIELDS.items():
        want = config.get(field)
        got = vocab.get(TOKEN_STRINGS[key])
        if want is not None and got is not None and int(want) != int(got):
            mismatched.append(f"{TOKEN_STRINGS[key]}: config {field}={want}, tokenizer {got}")
    checks.append(Check("token ids", not mismatched, "config ids match the tokenizer" if not mismatched else "; ".join(mismatched),
                        "" if not mismatched else "config.json and the tokenizer disagree: use files from one checkpoint"))
    bos = tok.bos_token or tok.eos_token
    checks.append(Check("BOS", bos is not None, f"BOS prepended to every prompt: {bos!r}",
                        "" if bos else "the tokenizer has neither bos nor eos; Molmo2 prompts start with <|im_end|>"))
    flags = LayoutFlags.from_checkpoint(path)
    source = "processor_config.json" if (path / "processor_config.json").is_file() else "released defaults (no processor_config.json)"
    checks.append(Check("processor flags", None, f"{asdict(flags)} from {source}"))
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    natively_known = "molmo2" in CONFIG_MAPPING
    checks.append(Check("trust_remote_code", None,
                        "not needed: transformers knows molmo2" if natively_known else
                        "not needed while molmo2-shim is active (built-in config and processor); needed without it"))
    return checks


# verl's rollout config keys -> vLLM's EngineArgs (verl 0.6 / 0.7 vLLMRollout and verl-agent).
VERL_ROLLOUT_KEYS = {
    "max_num_batched_tokens": "max_num_batched_tokens",
    "max_num_seqs": "max_num_seqs",
    "max_model_len": "max_model_len",
    "tensor_model_parallel_size": "tensor_parallel_size",
    "pipeline_model_parallel_size": "pipeline_parallel_size",
    "enable_chunked_prefill": "enable_chunked_prefill",
    "enable_prefix_caching": "enable_prefix_caching",
    "enforce_eager": "enforce_eager",
    "dtype": "dtype",
    "gpu_memory_utilization": "gpu_memory_utilization",
}


def engine_args_from_verl_rollout(path: str) -> dict[str, Any]:
    """EngineArgs keywords from a verl rollout config (the `actor_rollout_ref.rollout` section,
    or a file holding that section), as verl's vLLMRollout passes them."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    for key in ("actor_rollout_ref", "rollout"):
        data = data.get(key, data) if isinstance(data.get(key), dict) else data
    kwargs = {VERL_ROLLOUT_KEYS[k]: v for k, v in data.items() if k in VERL_ROLLOUT_KEYS and v is not None}
    if "max_model_len" not in kwargs and "prompt_length" in data and "response_length" in data:
        kwargs["max_model_len"] = int(data["prompt_length"]) + int(data["response_length"])
    if data.get("limit_images") is not None:
        kwargs["limit_mm_per_prompt"] = {"image": int(data["limit_images"])}
    kwargs.update((data.get("engine_kwargs") or {}).get("vllm") or {})
    return kwargs


def exactness_checks(model_dir: str, cli_args: str | None = None, verl_rollout: str | None = None) -> list[Check]:
    """Whether an engine with these settings would be exact, before launching it: the same check
    `LLM(...)` and `vllm serve` run at engine start (molmo2_shim.engine.exactness)."""
    import logging
    import shlex

    from ..activation.installer import install
    from ..engine.features import argument_parser
    from ..errors import Molmo2ConfigError

    install()
    from vllm.engine.arg_utils import EngineArgs

    if verl_rollout:
        args = EngineArgs(model=model_dir, **engine_args_from_verl_rollout(verl_rollout))
        source = f"verl rollout config {verl_rollout}"
    else:
        parser = EngineArgs.add_cli_args(argument_parser())
        args = EngineArgs.from_cli_args(parser.parse_args(["--model", model_dir, *shlex.split(cli_args or "")]))
        source = f"engine arguments {cli_args!r}"
    notes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING and "molmo2-shim" in record.getMessage():
                notes.append(record.getMessage())

    handler = Collect()
    logging.getLogger("molmo2_shim").addHandler(handler)
    try:
        args.create_engine_config()
    except Molmo2ConfigError as exc:
        return [Check("exactness", False, f"{source}: refused at engine start: {exc}",
                      "change the setting as the message says")]
    finally:
        logging.getLogger("molmo2_shim").removeHandler(handler)
    if not notes:
        return [Check("exactness", True, f"{source}: every prompt the engine accepts is computed exactly")]
    return [Check("exactness", True, f"{source}: the engine starts exact; " + " ".join(notes))]


def run(model_dir: str | None, child_probe: bool = True, engine_args: str | None = None,
        verl_rollout: str | None = None) -> list[Check]:
    checks = environment_checks() + plugin_checks()
    if child_probe and not any(c.name == "vllm" and c.ok is False for c in checks):
        checks += registration_checks()
    if model_dir:
        checks += model_checks(model_dir)
        if engine_args is not None or verl_rollout is not None:
            checks += exactness_checks(model_dir, engine_args, verl_rollout)
    return checks


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok is not False for c in checks), "checks": [asdict(c) for c in checks]}


def format_checks(checks: list[Check]) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "info"}
    lines = []
    for c in checks:
        lines.append(f"[{mark[c.ok]}] {c.name}: {c.detail}")
        if c.fix and c.ok is False:
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)
