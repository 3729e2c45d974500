"""molmo2-shim command line (also `python -m molmo2_shim`).

Exit codes: 0 all good; 1 a problem was found (doctor failed a check, explain recognised an
error, check-prompt found a mismatch or overflow); 2 usage error; 3 explain did not
recognise the input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


_OUT = sys.stdout


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=1) if args.json else text, file=_OUT, flush=True)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .diagnostics import doctor

    if (args.engine_args is not None or args.verl_rollout) and not args.model_dir:
        print("doctor: --engine-args / --verl-rollout need MODEL_DIR", file=sys.stderr)
        return EXIT_USAGE
    checks = doctor.run(args.model_dir, child_probe=not args.no_child, engine_args=args.engine_args,
                        verl_rollout=args.verl_rollout)
    _emit(args, doctor.as_json(checks), doctor.format_checks(checks))
    return EXIT_OK if all(c.ok is not False for c in checks) else EXIT_PROBLEM


def cmd_explain(args: argparse.Namespace) -> int:
    from .diagnostics.signatures import explain

    text = " ".join(args.text) if args.text else sys.stdin.read()
    found = explain(text)
    if not found:
        _emit(args, {"recognised": False, "diagnoses": []},
              "Not a known vLLM/Molmo2 failure. Run `molmo2-shim doctor` and check the first traceback in the log.")
        return EXIT_UNKNOWN
    lines = []
    for d in found:
        lines += [f"{d.title}", f"  matched: {d.matched.strip()[:160]}", f"  cause:   {d.cause}", f"  fix:     {d.fix}", ""]
    _emit(args, {"recognised": True, "diagnoses": [d.as_dict() for d in found]}, "\n".join(lines).rstrip())
    return EXIT_PROBLEM


def cmd_check_prompt(args: argparse.Namespace) -> int:
    from .diagnostics.check_prompt import check_prompt, format_report

    ids = [int(x) for x in args.prompt_ids.replace(",", " ").split()] if args.prompt_ids else None
    report = check_prompt(args.model_dir, args.image or [], prompt=args.prompt, prompt_ids=ids,
                          max_model_len=args.max_model_len)
    _emit(args, report.as_dict(), format_report(report))
    return EXIT_OK if report.ok else EXIT_PROBLEM


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="molmo2-shim", description="Diagnostics for Molmo2 on vLLM with molmo2-shim.",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="versions, compat-matrix row, plugin reach, checkpoint sanity")
    d.add_argument("model_dir", nargs="?")
    d.add_argument("--no-child", action="store_true", help="skip the fresh-process registration probe")
    d.add_argument("--engine-args", metavar="ARGS",
                   help="vLLM engine arguments as for `vllm serve` (one string): say before launch whether they are exact")
    d.add_argument("--verl-rollout", metavar="YAML",
                   help="a verl rollout config (actor_rollout_ref.rollout): say before launch whether it is exact")
    d.set_defaults(func=cmd_doctor)
    e = sub.add_parser("explain", help="explain a vLLM/Molmo2 error message or log (argument or stdin)")
    e.add_argument("text", nargs="*")
    e.set_defaults(func=cmd_explain)
    c = sub.add_parser("check-prompt", help="run vLLM's multimodal processing for one prompt and report the layout")
    c.add_argument("model_dir")
    c.add_argument("--image", action="append", help="image file (repeat for several)")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="prompt text (as sent to vLLM, after the chat template)")
    g.add_argument("--prompt-ids", help="prompt token ids, comma or space separated")
    c.add_argument("--max-model-len", type=int)
    c.set_defaults(func=cmd_check_prompt)
    for p in (d, e, c):
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    # vLLM logs to stdout; only the report goes there, everything else to stderr.
    global _OUT
    _OUT = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
