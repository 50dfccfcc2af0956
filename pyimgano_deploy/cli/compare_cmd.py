"""``pyimgano-deploy compare``: two results files side by side, with gates for a release pipeline."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_OK, EXIT_PARITY, EXIT_USAGE
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.runtimes.results_compare import MATCH_KEYS


@click.command("compare", epilog=EXIT_CODE_TABLE)
@click.argument("a", type=click.Path(exists=True, dir_okay=False))
@click.argument("b", type=click.Path(exists=True, dir_okay=False))
@click.option("--match", type=click.Choice(list(MATCH_KEYS)), default="sha256", show_default=True,
              help="How records are paired: sha256 = the same image bytes, wherever they lie (JSONL 1.2); resolved = the "
                   "same resolved path; input = the same path as given to infer.")
@click.option("--min-label-agreement", type=float, default=None, metavar="FRACTION",
              help="Fail (exit 6) when fewer than this share of the inputs scored in both files get the same label, e.g. 0.995.")
@click.option("--max-score-delta", type=float, default=None, metavar="SCORE",
              help="Fail (exit 6) when any input's |score A − score B| is above this, in score units.")
@click.option("--max-relative-delta", type=float, default=None, metavar="FRACTION",
              help="Fail (exit 6) when any input's |score A − score B| is above this fraction of A's threshold, e.g. 0.02.")
@click.option("--same-inputs", is_flag=True,
              help="Fail (exit 6) unless every input of either file is in the other, and scored in both or failed in both.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object (for archiving).")
def compare(a: str, b: str, match: str, min_label_agreement: float | None, max_score_delta: float | None,
            max_relative_delta: float | None, same_inputs: bool, as_json: bool) -> None:
    """Compare results file A (the reference, e.g. the line bundle's) with B (e.g. a candidate bundle
    run in shadow on the same images, another machine, engine or precision).

    It reports the inputs of one file only, inputs scored in one file and failed in the other,
    label agreement with every flip, and how far scores moved (largest and median |Δ|, relative
    to A's threshold, rank correlation). Without a gate option it only reports (exit 0).

    \b
    Examples:
      pyimgano-deploy compare line.jsonl candidate.jsonl --min-label-agreement 0.995 --same-inputs
      pyimgano-deploy compare cpu.jsonl gpu.jsonl --max-relative-delta 0.02 --json
    """
    from pyimgano_deploy.runtimes.results_compare import CompareGates, compare_results, read_results

    try:
        gates = CompareGates(min_label_agreement, max_score_delta, max_relative_delta, same_inputs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        report = compare_results(read_results(a, match), read_results(b, match), gates)
    except (ValueError, OSError) as exc:
        fail(f"cannot compare {a} and {b}: {exc}", EXIT_USAGE, as_json=as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in report_lines(report):
            click.echo(line)
    sys.exit(EXIT_OK if report["ok"] else EXIT_PARITY)


def _threshold_caution(sc: dict[str, Any]) -> str:
    if not sc["thresholds_differ"]:
        return ""
    if sc["max_abs_delta"] == 0:
        return " (the same scores against other thresholds, as after a recalibration: the label flips are the threshold's)"
    return " (the thresholds differ, so may the score units: read the rank correlation)"


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.6g}"


def _side(name: str, d: dict[str, Any]) -> str:
    digests = d["bundle_digests"]
    bundle = digests[0] if len(digests) == 1 else (f"{len(digests)} bundles" if digests else "no bundle named")
    extras = [f"{d['duplicates']} duplicate(s)" if d["duplicates"] else "", f"{d['unkeyed']} without a key" if d["unkeyed"] else "",
              "torn last line left out" if d["torn_tail"] else ""]
    return f"{name}: {d['path']}  {d['records']} record(s), {bundle}" + "".join(f"; {e}" for e in extras if e)


def _pair_line(p: dict[str, Any]) -> str:
    name = p["input"] + (f" / {p['input_b']}" if "input_b" in p else "")
    def side(s: str) -> str:
        if p[f"status_{s}"] != "ok":
            return f"error ({p.get(f'error_{s}') or 'no message'})"
        label = {0: "normal", 1: "anomalous"}.get(p[f"label_{s}"], "no label")
        return f"{_num(p[f'score_{s}'])} (threshold {_num(p[f'threshold_{s}'])}, {label})"
    return f"  {name}: {side('a')} → {side('b')}"


def report_lines(r: dict[str, Any]) -> list[str]:
    """The human form of a :func:`compare_results` report."""
    st, lab, sc = r["status"], r["labels"], r["scores"]
    lines = [_side("A", r["a"]), _side("B", r["b"]) + ("" if r["same_bundle"] else "  (bundles differ)"),
             f"matched by {r['match']}: {r['matched']}   only in A: {r['only_in_a']}   only in B: {r['only_in_b']}",
             f"status: {st['ok_in_both']} scored in both, {st['ok_to_error']} scored → failed, {st['error_to_ok']} failed → scored, "
             f"{st['error_in_both']} failed in both"]
    if lab["compared"]:
        lines.append(f"labels: {lab['agree']} of {lab['compared']} agree ({100 * lab['agreement']:.2f} %): "
                     f"{lab['normal_to_anomalous']} normal → anomalous, {lab['anomalous_to_normal']} anomalous → normal")
    if sc is not None:
        rel = "" if sc["max_relative_delta"] is None else f" ({100 * sc['max_relative_delta']:.3g} % of A's threshold)"
        lines.append(f"scores: {sc['identical']} identical; max |Δ| {_num(sc['max_abs_delta'])}{rel}, median |Δ| "
                     f"{_num(sc['median_abs_delta'])}, rank correlation {_num(sc['rank_correlation'])}"
                     + _threshold_caution(sc))
    if r["matched"] == 0:
        lines.append(f"no input matched by {r['match']}: " + ("the two files hold other images (other bytes)" if r["match"] == "sha256"
                     else "the files may name the same images by other paths; --match sha256 pairs them by content"))
    for title, rows, total in (("label flips", r["flips_first"], lab["compared"] - lab["agree"]),
                               ("status changes", r["status_changes_first"], st["ok_to_error"] + st["error_to_ok"])):
        if rows:
            lines.append(f"{title} ({total}" + (f", first {len(rows)}" if len(rows) < total else "") + "):")
            lines += [_pair_line(p) for p in rows]
    for side in ("a", "b"):
        first, total = r[f"only_in_{side}_first"], r[f"only_in_{side}"]
        if first:
            lines.append(f"only in {side.upper()} ({total}" + (f", first {len(first)}" if len(first) < total else "") + "):")
            lines += [f"  {name}" for name in first]
    lines += [f"FAILED: {g}" for g in r["failed_gates"]]
    lines.append("OK" if r["ok"] else f"result: FAILED (exit {EXIT_PARITY})")
    return lines
