"""The records of one ``infer`` run: what a results file already holds, and scoring inputs into it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pyimgano_deploy.cli.maps_output import MapsOutput
from pyimgano_deploy.inputs.source_info import unlike_training

#: failures listed in the summary (every failure is a record)
LIST_LIMIT = 20


#: how ``--resume`` checks that a recorded input's file still holds the bytes its record describes
RESUME_CHECKS = ("size", "sha256")


def previous_stats(jsonl: Path, wanted: set[bytes] | None, digest: str, check: str = "size") -> tuple[set[bytes], int, int]:
    """Inputs already in ``jsonl`` (keyed by resolved path; ``wanted`` None: every recorded one),
    their errors and anomalies.

    ``ValueError`` — before anything in the file is changed — when a record was written by
    another bundle (or names none), or when a recorded input's file no longer has the size (``check``
    "size") or the size and sha256 ("sha256") its record's ``source`` gives (the path now holds
    other bytes, so skipping it would leave a result for an image that is gone); only then is a
    truncated tail repaired."""
    if check not in RESUME_CHECKS:
        raise ValueError(f"the resume check is one of {', '.join(RESUME_CHECKS)}, got {check!r}")
    from pyimgano_deploy.runtimes.jsonl import iter_records, repair_tail, resume_key

    if not jsonl.exists() or jsonl.stat().st_size == 0:
        return set(), 0, 0
    changed: list[str] = []
    for record in iter_records(jsonl, tolerate_torn_tail=True):
        other = record.get("bundle_digest")
        if other != digest:
            raise ValueError(
                f"it holds records of {'another bundle (' + str(other) + ')' if other else 'a run that names no bundle'}, "
                f"this bundle is {digest}; nothing was changed: write to another --save-jsonl"
            )
        key = resume_key(record)
        if key is not None and (wanted is None or key in wanted):
            changed += _changed_since(key, record, check)
    if changed:
        shown = "; ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
        raise ValueError(
            f"{len(changed)} input(s) recorded there changed after they were scored: {shown}. Their records describe "
            "other bytes; nothing was changed: write to another --save-jsonl, or rescore every input with --overwrite"
        )
    repair_tail(jsonl)
    done: set[bytes] = set()
    errors = anomalies = 0
    for record in iter_records(jsonl):
        key = resume_key(record)
        if key is None or (wanted is not None and key not in wanted) or key in done:
            continue
        done.add(key)
        errors += record.get("status") != "ok"
        anomalies += record.get("label") == 1
    return done, errors, anomalies


def _changed_since(key: bytes, record: dict[str, Any], check: str = "size") -> list[str]:
    """``["'path' is now N bytes, recorded M"]`` (or "… other bytes (sha256 …)") when the file at
    ``key`` (a resolved path) no longer holds what its record's ``source`` gives; ``[]`` when it
    does, or the record has no source (schema < 1.2, array inputs). By default size only:
    re-reading every scored file would cost a resume as much I/O as the run; ``check`` "sha256"
    pays that for an exact answer (a file rewritten at the same size)."""
    from pyimgano_deploy.bundles.hashing import sha256_file

    source = record.get("source") or {}
    recorded = source.get("size_bytes")
    if not isinstance(recorded, int):
        return []
    name = os.fsdecode(key)
    try:
        now = os.stat(key).st_size
        if now != recorded:
            return [f"'{name}' is now {now} bytes, recorded {recorded}"]
        digest = source.get("sha256")
        if check == "sha256" and isinstance(digest, str) and sha256_file(key) != digest:
            return [f"'{name}' holds other bytes of the same size (sha256 differs from the recorded {digest[:12]}…)"]
    except OSError:
        return []  # listed by the input plan a moment ago; if it vanished or turned unreadable since, scoring reports it
    return []


@dataclass
class UnlikeTraining:
    """How many scored inputs were of another kind than the bundle's training images: grey
    against colour or the reverse (``input.trained_colour``), or of another aspect ratio
    (``input.trained_aspect``). The runtime warns once per run; these counts go in the summary.
    One rule with the runtime: :func:`~pyimgano_deploy.inputs.source_info.unlike_training`."""

    trained_colour: str | None
    trained_aspect: list[float] | None
    #: what the runtime does with such an input (``UNLIKE_TRAINING_POLICIES``)
    policy: str = "score"
    colour: int = 0
    aspect: int = 0

    def note(self, source: Any) -> None:
        found = unlike_training(self.trained_colour, self.trained_aspect, source)
        self.colour += "colour" in found
        self.aspect += "aspect" in found

    def summary(self) -> dict[str, Any]:
        return {"policy": self.policy, "other_colour": self.colour, "other_aspect": self.aspect,
                "trained_colour": self.trained_colour, "trained_aspect": self.trained_aspect}


def score_all(runtime: Any, todo: list[tuple[int, str, str]], writer: Any, bar: Any, maps: MapsOutput | None,
              dplan: Any, digest: str, u16_max: int | None, max_pixels: int | None,
              keep_errors: int = LIST_LIMIT, unlike: UnlikeTraining | None = None,
              stop: Callable[[], bool] | None = None) -> tuple[int, int, int, list[dict[str, Any]]]:
    """Score and record every pending ``(index, path, resolved path)``; returns (records
    written, errors, anomalies, the first ``keep_errors`` failures as ``{index, input, type,
    stage, message}``). ``unlike`` counts the scored inputs unlike the training images. When
    ``stop()`` turns true, no record follows the one being written (the rest stay pending for
    ``--resume``)."""
    import dataclasses

    from pyimgano_deploy.runtimes.jsonl import make_record
    from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult

    written = errors = anomalies = 0
    first_errors: list[dict[str, Any]] = []
    # overlays (dplan.needs_maps) draw the original-size map; --maps-resolution model excludes them
    include_maps: bool | str = maps.resolution if maps is not None else (dplan is not None and dplan.needs_maps)
    stream = runtime.infer_iter((p for _, p, _ in todo), include_maps=include_maps,
                                defects=None if dplan is None else dplan.runtime_config, u16_max=u16_max, max_pixels=max_pixels,
                                unlike_training=unlike.policy if unlike is not None else "score")
    for (index, path, resolved), item in zip(todo, stream):
        result, saved = item.result, None
        if result.ok and maps is not None and result.anomaly_map is not None:
            try:
                saved = maps.save(index, path, result.anomaly_map)
            except (OSError, ValueError) as exc:
                err = InferenceError(type(exc).__name__, f"cannot save anomaly map: {exc}", "postprocess")
                result = InferenceResult.failure(err, result.threshold, result.source)
        if result.ok and dplan is not None and item.defects_result is not None:
            try:
                result = dataclasses.replace(result, defects=dplan.record(index, path, item.defects_result, result.anomaly_map,
                                                                           u16_max=u16_max, max_pixels=max_pixels))
            except (OSError, ValueError) as exc:
                err = InferenceError(type(exc).__name__, f"cannot save defects output: {exc}", "postprocess")
                result = InferenceResult.failure(err, result.threshold, result.source)
        writer.write(make_record(index, path, result, timing_ms=item.timing_ms, anomaly_map=saved,
                                 bundle_digest=digest, resolved_path=resolved, u16_max=u16_max))
        written += 1
        errors += not result.ok
        anomalies += result.label == 1
        if unlike is not None:  # scored or refused (--unlike-training refuse), each is counted
            unlike.note(result.source)
        if not result.ok and len(first_errors) < keep_errors:
            first_errors.append({"index": index, "input": path, **result.error.to_dict()})
        if bar is not None:
            bar.update(1)
        if stop is not None and stop():
            break
    close = getattr(stream, "close", None)
    if close is not None:  # a stop leaves the engine's pipeline mid-stream: end it now, not at exit
        close()
    return written, errors, anomalies, first_errors


__all__ = ["LIST_LIMIT", "RESUME_CHECKS", "UnlikeTraining", "previous_stats", "score_all"]
