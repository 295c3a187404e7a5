#!/usr/bin/env python3
"""Summarize criterion results as a markdown table (python3 stdlib only).

Reads `<criterion dir>/<group>/<bench>/new/estimates.json` (the latest run of each benchmark) and
prints, per group, the median with its confidence interval, then the payment ratios:
`whole_payment / bare_sign_verify` (target: at most 1.25) and
`voucher_recover_address / voucher_verify_cached_key`.

Ratios are only meaningful between benchmarks of the same run: on a shared machine, absolute
figures move with the load. Run the `payment` group in one `cargo bench` invocation.

Exit status 1 when a ratio misses its target (whole/bare above 1.25).

Usage: python3 benches/summarize.py [--criterion-dir target/criterion] [--group payment ...]
"""

import argparse
import json
import sys
from pathlib import Path

from publish import fmt_time  # benches/ is on the path when this script runs

WHOLE_TARGET = 1.25
# Terms of a ratio whose results were written further apart than this come from different runs.
STALE_SECS = 600

# (label, numerator, denominator, target or None), all within the `payment` group.
RATIOS = [
    ("whole_payment / bare_sign_verify", "whole_payment", "bare_sign_verify", WHOLE_TARGET),
    ("voucher_recover_address / voucher_verify_cached_key", "voucher_recover_address",
     "voucher_verify_cached_key", None),
    ("voucher_sign + voucher_verify_cached_key / bare_sign_verify", ("voucher_sign",
     "voucher_verify_cached_key"), "bare_sign_verify", None),
]


def load(criterion_dir):
    """{group: {bench: estimates}}; bench ids with slashes (`encode/piece_16k`) are kept whole."""
    results = {}
    for est in sorted(criterion_dir.glob("**/new/estimates.json")):
        rel = est.relative_to(criterion_dir).parts[:-2]  # drop `new/estimates.json`
        if len(rel) < 2 or rel[0] == "report":
            continue
        group, bench = rel[0], "/".join(rel[1:])
        with est.open() as f:
            data = json.load(f)
        data["_mtime"] = est.stat().st_mtime
        results.setdefault(group, {})[bench] = data
    return results


def median(est):
    return est["median"]["point_estimate"]


def table(group, benches):
    lines = [f"### {group}", "", "| bench | median | 95% CI of the median |", "|---|---:|---|"]
    for bench, est in benches.items():
        ci = est["median"]["confidence_interval"]
        lines.append(
            f"| `{bench}` | {fmt_time(median(est))} | "
            f"{fmt_time(ci['lower_bound'])} – {fmt_time(ci['upper_bound'])} |"
        )
    return lines


def keys_of(key):
    return key if isinstance(key, tuple) else (key,)


def value(benches, key):
    keys = keys_of(key)
    if not all(k in benches for k in keys):
        return None
    return sum(median(benches[k]) for k in keys)


def ratios(benches):
    lines = ["### payment ratios (of medians)", "", "| ratio | value | target |", "|---|---:|---|"]
    ok = True
    for label, num, den, target in RATIOS:
        n, d = value(benches, num), value(benches, den)
        if n is None or d is None:
            lines.append(f"| {label} | missing | |")
            continue
        r = n / d
        verdict = ""
        if target is not None:
            met = r <= target
            ok &= met
            verdict = f"≤ {target} {'met' if met else 'NOT met'}"
        times = [benches[k]["_mtime"] for k in keys_of(num) + keys_of(den)]
        if max(times) - min(times) > STALE_SECS:
            verdict += " (terms from different runs: rerun the whole group)"
        lines.append(f"| {label} | {r:.3f} | {verdict} |")
    return lines, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion-dir", type=Path, default=Path("target/criterion"))
    ap.add_argument("--group", action="append", help="only these groups (repeatable)")
    args = ap.parse_args()
    results = load(args.criterion_dir)
    if not results:
        sys.exit(f"no criterion results under {args.criterion_dir}")
    groups = args.group or sorted(results)
    out, ok = [], True
    for g in groups:
        if g not in results:
            sys.exit(f"no results for group {g!r} (have: {', '.join(sorted(results))})")
        out += table(g, results[g]) + [""]
    if "payment" in results and "payment" in groups:
        lines, ok = ratios(results["payment"])
        out += lines
    print("\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
