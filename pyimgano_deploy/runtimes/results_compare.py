"""Two JSONL results files side by side (``pyimgano-deploy compare``): which inputs each one
scored, where statuses and labels differ, and how far the scores moved. Torch-free.

The uses it serves: qualifying a new bundle in shadow on the images the line bundle scored,
checking that another machine, engine or precision reproduces a run, and a re-run of the same
folder. Records are matched by a key (:data:`MATCH_KEYS`):

- ``sha256``: the digest of the bytes read (``source.sha256``, JSONL 1.2). Same image, wherever
  it lies, so two machines with other mount points match. Records without one (a file that
  could not be read, array inputs, older files) cannot be matched this way and are counted.
- ``resolved``: the resolved path the input was read from (what ``--resume`` matches on).
- ``input``: the path as the run was given it.

The first record of a key in a file is the one compared (as ``--resume`` keeps the first);
later ones are counted as duplicates. A torn last line (a run killed mid-write, or one still
writing) is left out and reported, never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyimgano_deploy.runtimes.jsonl import iter_records, name_key

COMPARE_SCHEMA_VERSION = "1.0"
MATCH_KEYS = ("sha256", "resolved", "input")
#: pairs listed per kind (flips, status changes, inputs of one file only); every count is complete
LIST_LIMIT = 20
_NOT_RESULTS = "compare reads infer's JSONL results (--save-jsonl: one record per line), not its --json summary or Parquet"


@dataclass(frozen=True)
class ResultsFile:
    """One results file read for comparison: its first record per key, in file order."""

    path: str
    match: str
    by_key: dict[bytes, dict[str, Any]]
    n_records: int
    #: inputs of the records that have no key under ``match``
    unkeyed: list[str] = field(default_factory=list)
    duplicates: int = 0
    bundle_digests: list[str] = field(default_factory=list)
    torn_tail: bool = False

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.n_records, "keyed": len(self.by_key), "unkeyed": len(self.unkeyed),
                "unkeyed_first": self.unkeyed[:LIST_LIMIT], "duplicates": self.duplicates,
                "bundle_digests": self.bundle_digests, "torn_tail": self.torn_tail}


@dataclass(frozen=True)
class CompareGates:
    """What ``compare`` fails on (exit 6); ``None`` / ``False``: not checked.

    ``min_label_agreement``: the share of inputs scored in both whose labels agree, in [0, 1].
    ``max_score_delta``: the largest |score A − score B| allowed, in score units.
    ``max_relative_delta``: the same, as a fraction of A's threshold.
    ``same_inputs``: every input of either file is matched in the other, and scored in both or
    failed in both."""

    min_label_agreement: float | None = None
    max_score_delta: float | None = None
    max_relative_delta: float | None = None
    same_inputs: bool = False

    def __post_init__(self) -> None:
        if self.min_label_agreement is not None and not 0.0 <= self.min_label_agreement <= 1.0:
            raise ValueError(f"the minimum label agreement is a fraction in [0, 1], got {self.min_label_agreement}")
        for name in ("max_score_delta", "max_relative_delta"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number ≥ 0, got {value}")


def record_key(record: dict[str, Any], match: str) -> bytes | None:
    """The key of ``record`` under ``match`` (one of :data:`MATCH_KEYS`); None when it has none."""
    if match == "sha256":
        digest = (record.get("source") or {}).get("sha256")
        return digest.encode("ascii") if isinstance(digest, str) else None
    if match in ("resolved", "input"):
        return name_key(record, match)
    raise ValueError(f"match must be one of {', '.join(MATCH_KEYS)}, got {match!r}")


def read_results(path: str | os.PathLike[str], match: str) -> ResultsFile:
    """Read a results file for :func:`compare_results`.

    ``ValueError`` names the file and line when a complete line is not a JSON object or not a
    record of ``infer`` (a ``--json`` summary, a Parquet file), and when records were scored but
    none has a ``match`` key (with the option to use). An empty file is an empty run's results."""
    path = Path(path)
    if match not in MATCH_KEYS:
        raise ValueError(f"match must be one of {', '.join(MATCH_KEYS)}, got {match!r}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        raise ValueError(f"{path} is a Parquet file; {_NOT_RESULTS}")
    by_key: dict[bytes, dict[str, Any]] = {}
    unkeyed: list[str] = []
    digests: list[str] = []
    n = duplicates = 0
    scored = False
    try:
        for record in iter_records(path, tolerate_torn_tail=True):
            n += 1
            if record.get("status") not in ("ok", "error") or "input" not in record:
                raise ValueError(f"{path}: record {n} is not a record of infer (it needs 'input', and 'status' ok or error)")
            digest = record.get("bundle_digest")
            if isinstance(digest, str) and digest not in digests:
                digests.append(digest)
            key = record_key(record, match)
            scored = scored or record["status"] == "ok"
            if key is None:
                unkeyed.append(str(record.get("input")))
            elif key in by_key:
                duplicates += 1
            else:
                by_key[key] = record
    except ValueError as exc:
        raise ValueError(f"{exc}; {_NOT_RESULTS}") from exc
    size = path.stat().st_size
    with open(path, "rb") as fh:
        torn = size > 0 and (fh.seek(size - 1), fh.read(1))[1] != b"\n"
    if not by_key and scored:  # scored records without the key: the file predates it, a whole-file mistake
        hint = {"sha256": "records of JSONL schema < 1.2 carry no source digest: pass --match resolved or --match input",
                "resolved": "records of JSONL schema < 1.1 carry no resolved path: pass --match input"}.get(match, "")
        raise ValueError(f"none of the {n} records of {path} has a {match!r} key; {hint}".rstrip("; "))
    return ResultsFile(path.as_posix(), match, by_key, n, unkeyed, duplicates, digests, torn)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation of two score vectors (ties get their mean rank); None below
    two pairs or when either vector is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return None
    rx, ry = _mean_ranks(x), _mean_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _mean_ranks(v: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0)[inverse]).astype(np.float64)


def _scored(record: dict[str, Any]) -> bool:
    return record.get("status") == "ok" and record.get("score") is not None


def _pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    row = {"input": a.get("input"), "score_a": a.get("score"), "score_b": b.get("score"),
           "threshold_a": a.get("threshold"), "threshold_b": b.get("threshold"),
           "label_a": a.get("label"), "label_b": b.get("label"), "status_a": a.get("status"), "status_b": b.get("status")}
    if b.get("input") != a.get("input"):
        row["input_b"] = b.get("input")
    for side, record in (("a", a), ("b", b)):
        if record.get("error"):
            row[f"error_{side}"] = record["error"].get("message")
    return row


def _score_stats(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    sa = np.array([a["score"] for a, _ in pairs], np.float64)
    sb = np.array([b["score"] for _, b in pairs], np.float64)
    thr = np.array([abs(a["threshold"]) if isinstance(a.get("threshold"), (int, float)) else np.nan for a, _ in pairs])
    delta = np.abs(sa - sb)
    relative = delta / np.maximum(thr, 1e-12)
    has_rel = bool(np.isfinite(relative).any())
    order = np.argsort(-delta, kind="stable")[: min(5, len(pairs))]
    return {
        "identical": int((delta == 0).sum()),
        "thresholds_differ": any(a.get("threshold") != b.get("threshold") for a, b in pairs),
        "max_abs_delta": float(delta.max()) if delta.size else None,
        "median_abs_delta": float(np.median(delta)) if delta.size else None,
        "max_relative_delta": float(np.nanmax(relative)) if has_rel else None,
        "rank_correlation": rank_correlation(sa, sb),
        "largest_deltas": [{**_pair(*pairs[i]), "abs_delta": float(delta[i])} for i in order],
    }


def compare_results(a: ResultsFile, b: ResultsFile, gates: CompareGates | None = None) -> dict[str, Any]:
    """The comparison report (``schema_version`` :data:`COMPARE_SCHEMA_VERSION`): inputs matched
    and of one file only, status changes, label agreement and flips, score deltas, and the gates
    with ``failed_gates`` (each a sentence with its numbers) and ``ok``."""
    if a.match != b.match:
        raise ValueError(f"both files must be read with one match key, got {a.match!r} and {b.match!r}")
    gates = gates or CompareGates()
    common = [k for k in a.by_key if k in b.by_key]
    only_a = [str(a.by_key[k].get("input")) for k in a.by_key if k not in b.by_key]
    only_b = [str(b.by_key[k].get("input")) for k in b.by_key if k not in a.by_key]
    ok_ok, ok_err, err_ok, err_err = [], [], [], []
    bucket = {(True, True): ok_ok, (True, False): ok_err, (False, True): err_ok, (False, False): err_err}
    for k in common:
        ra, rb = a.by_key[k], b.by_key[k]
        bucket[(_scored(ra), _scored(rb))].append((ra, rb))
    labelled = [(ra, rb) for ra, rb in ok_ok if ra.get("label") is not None and rb.get("label") is not None]
    flips = [(ra, rb) for ra, rb in labelled if ra["label"] != rb["label"]]
    agreement = 1.0 - len(flips) / len(labelled) if labelled else None
    scores = _score_stats(ok_ok) if ok_ok else None
    report: dict[str, Any] = {
        "schema_version": COMPARE_SCHEMA_VERSION,
        "match": a.match,
        "a": a.describe(),
        "b": b.describe(),
        "same_bundle": len(a.bundle_digests) == 1 and a.bundle_digests == b.bundle_digests,
        "matched": len(common),
        "only_in_a": len(only_a), "only_in_a_first": only_a[:LIST_LIMIT],
        "only_in_b": len(only_b), "only_in_b_first": only_b[:LIST_LIMIT],
        "status": {"ok_in_both": len(ok_ok), "ok_to_error": len(ok_err), "error_to_ok": len(err_ok), "error_in_both": len(err_err)},
        "status_changes_first": [_pair(ra, rb) for ra, rb in (ok_err + err_ok)[:LIST_LIMIT]],
        "labels": {
            "compared": len(labelled), "agree": len(labelled) - len(flips), "agreement": agreement,
            "normal_to_anomalous": sum(ra["label"] == 0 for ra, _ in flips),
            "anomalous_to_normal": sum(ra["label"] == 1 for ra, _ in flips),
        },
        "flips_first": [_pair(ra, rb) for ra, rb in flips[:LIST_LIMIT]],
        "scores": scores,
        "gates": {"min_label_agreement": gates.min_label_agreement, "max_score_delta": gates.max_score_delta,
                  "max_relative_delta": gates.max_relative_delta, "same_inputs": gates.same_inputs},
    }
    report["failed_gates"] = _failed_gates(report, gates)
    report["ok"] = not report["failed_gates"]
    return report


def _failed_gates(report: dict[str, Any], gates: CompareGates) -> list[str]:
    failed: list[str] = []
    labels, scores = report["labels"], report["scores"] or {}
    if gates.min_label_agreement is not None:
        if labels["agreement"] is None:
            failed.append("label agreement: no input was labelled in both files")
        elif labels["agreement"] < gates.min_label_agreement:
            failed.append(f"label agreement {labels['agreement']:.4f} ({labels['agree']} of {labels['compared']}) is below "
                          f"{gates.min_label_agreement}")
    for gate, stat, unit in (("max_score_delta", "max_abs_delta", ""), ("max_relative_delta", "max_relative_delta", " of A's threshold")):
        bound = getattr(gates, gate)
        if bound is None:
            continue
        value = scores.get(stat)
        if value is None:
            failed.append(f"{gate.replace('_', ' ')}: no input was scored in both files" + (" with a threshold" if unit else ""))
        elif value > bound:
            failed.append(f"{gate.replace('_', ' ')}: max |Δscore| is {value:.6g}{unit}, above {bound:g}")
    if gates.same_inputs:
        st = report["status"]
        parts = [f"{n} {what}" for n, what in (
            (report["only_in_a"], "only in A"), (report["only_in_b"], "only in B"),
            (report["a"]["unkeyed"] + report["b"]["unkeyed"], f"without a {report['match']} key"),
            (st["ok_to_error"], "scored in A but failed in B"), (st["error_to_ok"], "failed in A but scored in B")) if n]
        if parts:
            failed.append("same inputs: " + ", ".join(parts))
    return failed


__all__ = ["COMPARE_SCHEMA_VERSION", "CompareGates", "LIST_LIMIT", "MATCH_KEYS", "ResultsFile", "compare_results",
           "rank_correlation", "read_results", "record_key"]
