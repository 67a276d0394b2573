"""``kdmobile targets``: the registered export targets and whether each can export and run here.

kdmobile targets
kdmobile targets --json
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list export targets and their availability on this machine")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def availability() -> list[dict[str, object]]:
    """One row per target: name, runtime, precisions, export/run availability with reasons."""
    from kdmobile.export.discovery import DISCOVERY_ERRORS, discover

    rows: list[dict[str, object]] = []
    registry = discover()
    for name in registry.names():
        t = registry.get(name)()
        can_export, why_export = t.availability()
        can_run, why_run = t.runtime_availability()
        rows.append(
            {
                "name": name,
                "runtime": t.runtime,
                "suffix": t.suffix,
                "precisions": list(t.precisions),
                "export": can_export,
                "export_reason": why_export,
                "run": can_run,
                "run_reason": why_run,
            }
        )
    for module, err in DISCOVERY_ERRORS.items():
        rows.append(
            {
                "name": f"targets/{module}.py",
                "runtime": "?",
                "suffix": "",
                "precisions": [],
                "export": False,
                "export_reason": f"failed to import: {err}",
                "run": False,
                "run_reason": "",
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    import json

    rows = availability()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        export = "yes" if r["export"] else f"no ({r['export_reason']})"
        run_ = ("yes" if r["run"] else "no") + (f" ({r['run_reason']})" if r["run_reason"] else "")
        print(
            f"{r['name']:<11} {r['runtime']:<28} precisions {','.join(r['precisions']):<20} export: {export}; run: {run_}"
        )
    return 0
