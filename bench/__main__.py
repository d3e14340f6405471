"""``python -m bench``: run every scenario, print the table, write the JSON record.

Exit status: 0 when every target is met (or with ``--quick``, which enforces none),
1 when a target is missed in a full run, 2 when a scenario could not run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback

from bench import scenarios
from bench.report import Report

SCENARIOS = {
    "registration": scenarios.registration,
    "reload": scenarios.reload,
    "allocate": scenarios.allocate,
    "scale": scenarios.scale,
    "hostile": scenarios.hostile,
    "dra": scenarios.dra,
    "simulate": scenarios.simulate,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true",
        help="small sizes and few iterations: proves the suite works; no targets enforced",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )  # fmt: skip
    return parser.parse_args(argv)


async def run(report: Report, only: list[str] | None) -> bool:
    sizes = scenarios.QUICK if report.quick else scenarios.FULL
    ok = True
    for name, scenario in SCENARIOS.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            await scenario(report, sizes)
        except Exception:
            ok = False
            print(f"-- {name} FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        report.details.setdefault("scenario_seconds", {})[name] = time.perf_counter() - started
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = Report(quick=args.quick)
    ok = asyncio.run(run(report, args.only))
    print(report.table())
    path = report.write_json()
    print(f"\nwritten: {path}")
    if not ok:
        print("a scenario failed (see above)", file=sys.stderr)
        return 2
    if report.missed and not args.quick:
        print(f"{len(report.missed)} target(s) not met", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
