"""bundle.json schema: validation, canonical JSON hashing, path safety.

``validate_manifest`` collects every problem it finds and raises one ``InvalidBundleError``
whose lines each start with the JSON key path at fault (``engines[0].precision: expected
one of 'fp32', 'fp16', 'int8', got 'int4'``). Unknown extra keys are accepted, so a newer minor
schema version still validates; another major version is refused up front.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any, Callable, Mapping

import numpy as np

from pyimgano_deploy.bundles.errors import InvalidBundleError, format_problems
from pyimgano_deploy.checks import MISSING, describe, is_int, is_number, u16_max_problem
from pyimgano_deploy.inputs.source_info import COLOURS
from pyimgano_deploy.bundles import io_contract as io
from pyimgano_deploy.bundles.precision_scopes import check_scopes
from pyimgano_deploy.bundles.signing import SIGNATURE_NAME

SCHEMA_VERSION = "1.7"  # 1.1: no infer_config.json (the manifest is the single source), golden sources; 1.2: model.fp32_scopes; 1.3: int8 engines, gate rule 2; 1.4: input.u16_max; 1.5: input.trained_colour; 1.6: input.trained_aspect; 1.7: recalibrations
SUPPORTED_MAJOR = 1
MANIFEST_NAME = "bundle.json"
INFER_CONFIG_NAME = "infer_config.json"  # schema 1.0 only; checked against the manifest, never read
#: present while an export is still writing the folder; a bundle holding it never validates
INCOMPLETE_MARKER = ".incomplete"
#: the hidden sibling folders an export writes through: ``.NAME.tmp-PID`` and ``.NAME.old-PID``
LEFTOVER_DIR = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")

ENGINE_FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_RANKS = dict(zip(io.OUTPUT_NAMES, (1, 3)))

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MISSING = MISSING


# ----------------------------------------------------------------------------- helpers
def leftover_dir_problem(root: PurePath) -> str | None:
    """Why the folder ``root`` is an export's work folder, not a bundle (``None`` when it is not)."""
    match = LEFTOVER_DIR.match(root.name)
    if match:
        what = "being written" if match["kind"] == "tmp" else "being replaced"
        return (f"this is the work folder of an export of {match['name']!r} (a bundle {what}, or the leftover "
                f"of an interrupted export); it is not a bundle: run the export again")
    if os.path.lexists(os.path.join(str(root), INCOMPLETE_MARKER)):
        return f"incomplete bundle ({INCOMPLETE_MARKER} present): an export did not finish writing it"
    return None


def utc_now_iso() -> str:
    """Current time as ISO-8601 UTC with a ``Z`` suffix, second resolution (``created_at``)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_schema_version(value: object) -> tuple[int, int]:
    """``"1.0"`` → ``(1, 0)``; raises ``ValueError`` for anything that is not ``"<major>.<minor>"``."""
    if not isinstance(value, str) or not _VERSION.match(value):
        raise ValueError(f"expected a version string like {SCHEMA_VERSION!r}, got {describe(value)}")
    major, minor = value.split(".")
    return int(major), int(minor)


def relative_path_problem(rel: object) -> str | None:
    """Why ``rel`` is not a safe POSIX path relative to the bundle root, or ``None`` when it is."""
    if not isinstance(rel, str) or not rel:
        return f"expected a non-empty relative path, got {describe(rel)}"
    if "\\" in rel:
        return f"path {rel!r} contains a backslash; expected '/' separators"
    if "\x00" in rel:
        return f"path {rel!r} contains a NUL character"
    if rel.startswith("/") or _DRIVE.match(rel):
        return f"path {rel!r} is absolute; expected a path relative to the bundle directory"
    parts = rel.split("/")
    if ".." in parts:
        return f"path {rel!r} contains '..' and would leave the bundle directory"
    if any(p in ("", ".") for p in parts):
        return f"path {rel!r} is not normalised (empty or '.' component)"
    return None


def to_jsonable(obj: Any, path: str = "") -> Any:
    """Plain JSON types from dicts/lists/tuples, numpy scalars and arrays, and paths.

    Raises ``TypeError`` naming the key path of a value JSON cannot hold.
    """
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{path or '(root)'}: JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(value, _kp(path, key))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), path)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(f"{path or '(root)'}: {type(obj).__name__} is not JSON-serialisable")


def canonical_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, compact separators, UTF-8, no NaN/Infinity."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_sha256(obj: Any) -> str:
    """Hex sha256 of ``canonical_json(obj)`` encoded as UTF-8."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def _kp(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ----------------------------------------------------------------------------- checker
_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "str": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "int": (is_int, "an integer"),
    "number": (is_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "array": (lambda v: isinstance(v, list), "an array"),
}


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.flagged: set[str] = set()

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '(root)'}: {message}")
        self.flagged.add(path)

    def field(
        self,
        obj: Mapping[str, Any],
        key: str,
        prefix: str,
        kind: str,
        *,
        nullable: bool = False,
        optional: bool = False,
        minimum: float | None = None,
    ) -> Any:
        """The value at ``obj[key]`` when it has ``kind``; else record a problem and return _MISSING."""
        path = _kp(prefix, key)
        value = obj.get(key, _MISSING)
        if value is _MISSING and optional:
            return _MISSING
        if value is None and nullable:
            return None
        ok, text = _KINDS[kind]
        if value is _MISSING or not ok(value):
            expected = text + (" or null" if nullable else "")
            self.add(path, f"expected {expected}, got {describe(value)}")
            return _MISSING
        if minimum is not None and value < minimum:
            self.add(path, f"expected {text} >= {minimum:g}, got {describe(value)}")
            return _MISSING
        return value

    def const(self, obj: Mapping[str, Any], key: str, prefix: str, allowed: tuple[Any, ...]) -> Any:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value not in allowed or isinstance(value, bool):
            choices = ", ".join(repr(a) for a in allowed)
            expected = f"{allowed[0]!r}" if len(allowed) == 1 else f"one of {choices}"
            self.add(_kp(prefix, key), f"expected {expected}, got {describe(value)}")
            return _MISSING
        return value

    def obj(self, parent: Mapping[str, Any], key: str, prefix: str, *, nullable: bool = False) -> Any:
        return self.field(parent, key, prefix, "object", nullable=nullable)

    def objects(self, items: list[Any], prefix: str):
        """``(i, "<prefix>[i]", item)`` for each object of an array; other entries are problems."""
        for i, item in enumerate(items):
            where = f"{prefix}[{i}]"
            if isinstance(item, dict):
                yield i, where, item
            else:
                self.add(where, f"expected an object, got {describe(item)}")

    def rel_path(self, obj: Mapping[str, Any], key: str, prefix: str) -> Any:
        value = obj.get(key, _MISSING)
        problem = relative_path_problem(None if value is _MISSING else value)
        if value is _MISSING:
            self.add(_kp(prefix, key), f"expected a relative path, got {describe(value)}")
            return _MISSING
        if problem:
            self.add(_kp(prefix, key), problem)
            return _MISSING
        return value


# ----------------------------------------------------------------------------- sections
def _check_toolkit(ck: _Checker, m: Mapping[str, Any]) -> None:
    tk = ck.obj(m, "toolkit", "")
    if tk is not _MISSING:
        ck.field(tk, "name", "toolkit", "str")
        ck.field(tk, "version", "toolkit", "str")
    created = ck.field(m, "created_at", "", "str")
    if created is not _MISSING:
        example = "'2024-05-01T12:00:00Z'"
        try:
            when = datetime.fromisoformat(created)
        except ValueError:
            ck.add("created_at", f"expected an ISO-8601 UTC timestamp like {example}, got {describe(created)}")
        else:
            if when.utcoffset() is None or when.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
                ck.add("created_at", f"expected a UTC timestamp (suffix 'Z' or '+00:00') like {example}, got {describe(created)}")


def _check_model_input(ck: _Checker, m: Mapping[str, Any]) -> None:
    model = ck.obj(m, "model", "")
    if model is not _MISSING:
        ck.field(model, "name", "model", "str")
        ck.field(model, "family", "model", "str")
        ck.field(model, "parameters", "model", "object")
        if "fp32_scopes" in model:
            try:
                check_scopes(model["fp32_scopes"], "model.fp32_scopes")
            except ValueError as exc:
                ck.add("model.fp32_scopes", str(exc).split(": ", 1)[1])
    inp = ck.obj(m, "input", "")
    if inp is not _MISSING:
        ck.const(inp, "name", "input", (io.INPUT_NAME,))
        ck.const(inp, "layout", "input", (io.INPUT_LAYOUT,))
        ck.const(inp, "dtype", "input", (io.INPUT_DTYPE,))
        ck.const(inp, "channels", "input", (io.INPUT_CHANNELS,))
        ck.field(inp, "height", "input", "int", minimum=1)
        ck.field(inp, "width", "input", "int", minimum=1)
        ck.field(inp, "preprocess", "input", "object")
        problem = u16_max_problem(inp[io.U16_MAX_KEY]) if io.U16_MAX_KEY in inp else None
        if problem is not None:
            ck.add(f"input.{io.U16_MAX_KEY}", f"the training set's 16-bit full scale: {problem}")
        if io.TRAINED_COLOUR_KEY in inp and inp[io.TRAINED_COLOUR_KEY] not in COLOURS:
            ck.add(f"input.{io.TRAINED_COLOUR_KEY}", f"expected one of {list(COLOURS)}, got {describe(inp[io.TRAINED_COLOUR_KEY])}")
        if io.TRAINED_ASPECT_KEY in inp:
            aspect = inp[io.TRAINED_ASPECT_KEY]
            if not (isinstance(aspect, list) and len(aspect) == 2 and all(is_number(a) and a > 0 for a in aspect)
                    and aspect[0] <= aspect[1]):
                ck.add(f"input.{io.TRAINED_ASPECT_KEY}", f"expected [min, max] of positive width / height ratios, got {describe(aspect)}")


def _check_outputs(ck: _Checker, m: Mapping[str, Any]) -> None:
    outputs = ck.field(m, "outputs", "", "array")
    if outputs is _MISSING:
        return
    seen: list[str] = []
    for _, prefix, out in ck.objects(outputs, "outputs"):
        name = ck.field(out, "name", prefix, "str")
        ck.const(out, "dtype", prefix, (io.OUTPUT_DTYPE,))
        shape = ck.field(out, "shape", prefix, "array")
        if name is _MISSING:
            continue
        if name in seen:
            ck.add(f"{prefix}.name", f"duplicate output name {name!r}")
        seen.append(name)
        if shape is _MISSING or name not in OUTPUT_RANKS:
            continue
        rank = OUTPUT_RANKS[name]
        if len(shape) != rank:
            ck.add(f"{prefix}.shape", f"expected {rank} dimension(s) for {name!r}, got {describe(shape)}")
        for j, dim in enumerate(shape):
            if not ((isinstance(dim, str) and dim) or (is_int(dim) and dim >= 1)):
                ck.add(f"{prefix}.shape[{j}]", f"expected a positive integer or a symbolic name, got {describe(dim)}")
    for required in OUTPUT_RANKS:
        if required not in seen:
            ck.add("outputs", f"expected an output named {required!r}; found {seen}")


def _check_engine(ck: _Checker, eng: Mapping[str, Any], prefix: str) -> None:
    ck.rel_path(eng, "file", prefix)
    fmt = ck.const(eng, "format", prefix, ENGINE_FORMATS)
    ck.const(eng, "precision", prefix, PRECISIONS)
    if fmt == "onnx":
        ck.field(eng, "opset", prefix, "int", minimum=1)
        ck.field(eng, "external_data", prefix, "bool")
    elif fmt == "tensorrt":
        ck.field(eng, "tensorrt_version", prefix, "str")
        gpu = ck.obj(eng, "gpu", prefix)
        if gpu is not _MISSING:
            ck.field(gpu, "name", f"{prefix}.gpu", "str")
            ck.field(gpu, "compute_capability", f"{prefix}.gpu", "str")
    bp = f"{prefix}.batch"
    batch = ck.obj(eng, "batch", prefix)
    if batch is _MISSING:
        return
    sizes = [ck.field(batch, k, bp, "int", minimum=1) for k in ("min", "opt", "max")]
    dynamic = ck.field(batch, "dynamic", bp, "bool")
    if _MISSING in sizes:
        return
    lo, opt, hi = sizes
    if not lo <= opt <= hi:
        ck.add(bp, f"expected min <= opt <= max, got min={lo}, opt={opt}, max={hi}")
    elif dynamic is False and lo != hi:
        ck.add(bp, f"a static batch (dynamic=false) needs min == opt == max, got min={lo}, opt={opt}, max={hi}")


def _check_engines(ck: _Checker, m: Mapping[str, Any]) -> None:
    engines = ck.field(m, "engines", "", "array")
    if engines is _MISSING:
        return
    if not engines:
        ck.add("engines", "expected at least one engine, got an empty array")
    files: list[str] = []
    for _, prefix, eng in ck.objects(engines, "engines"):
        _check_engine(ck, eng, prefix)
        f = eng.get("file")
        if isinstance(f, str) and f in files:
            ck.add(f"{prefix}.file", f"duplicate engine file {f!r}")
        files.append(f)  # type: ignore[arg-type]


def check_threshold(ck: _Checker, rec: Mapping[str, Any], prefix: str) -> None:
    """Fields ``ThresholdCalibration.from_dict`` needs, with types and a finite value."""
    ck.field(rec, "value", prefix, "number")
    ck.field(rec, "method", prefix, "str")
    ck.field(rec, "source_split", prefix, "str")
    ck.field(rec, "n_images", prefix, "int", minimum=1)
    ck.field(rec, "n_values", prefix, "int", minimum=1, optional=True)
    ck.field(rec, "code_path", prefix, "text", optional=True)
    q = ck.field(rec, "quantile", prefix, "number", nullable=True, optional=True)
    if isinstance(q, (int, float)) and not 0.0 < q <= 1.0:
        ck.add(f"{prefix}.quantile", f"expected a number in (0, 1] or null, got {describe(q)}")
    summary = ck.field(rec, "score_summary", prefix, "object", optional=True)
    if isinstance(summary, dict):
        for key in summary:
            ck.field(summary, key, f"{prefix}.score_summary", "number")


def _check_thresholds(ck: _Checker, m: Mapping[str, Any]) -> None:
    th = ck.obj(m, "thresholds", "")
    if th is _MISSING:
        return
    image = ck.obj(th, "image", "thresholds")
    if image is not _MISSING:
        check_threshold(ck, image, "thresholds.image")
    pixel = ck.field(th, "pixel", "thresholds", "object", nullable=True, optional=True)
    if isinstance(pixel, dict):
        check_threshold(ck, pixel, "thresholds.pixel")


def _check_recalibrations(ck: _Checker, m: Mapping[str, Any]) -> None:
    """``recalibrations`` (1.7, optional): one entry per ``recalibrate``, oldest first, each with
    the digest of the bundle it came from and the thresholds it replaced."""
    entries = ck.field(m, "recalibrations", "", "array", optional=True)
    if not isinstance(entries, list):
        return
    for _, prefix, entry in ck.objects(entries, "recalibrations"):
        digest = entry.get("from_digest", _MISSING)
        if not (isinstance(digest, str) and digest.startswith("sha256:") and _HEX64.match(digest[len("sha256:"):])):
            ck.add(f"{prefix}.from_digest", f"expected 'sha256:' and 64 lowercase hex characters, got {describe(digest)}")
        ck.field(entry, "created_at", prefix, "str")
        ck.field(entry, "toolkit_version", prefix, "str")
        previous = ck.obj(entry, "previous_thresholds", prefix)
        if previous is not _MISSING:
            image = ck.obj(previous, "image", f"{prefix}.previous_thresholds")
            if image is not _MISSING:
                check_threshold(ck, image, f"{prefix}.previous_thresholds.image")
            pixel = ck.field(previous, "pixel", f"{prefix}.previous_thresholds", "object", nullable=True, optional=True)
            if isinstance(pixel, dict):
                check_threshold(ck, pixel, f"{prefix}.previous_thresholds.pixel")
        images = ck.obj(entry, "images", prefix)
        if images is not _MISSING:
            for key in ("n_inputs", "n_scored", "n_failed"):
                ck.field(images, key, f"{prefix}.images", "int", minimum=0)
            ck.field(images, "sha256", f"{prefix}.images", "str")


def _check_parity_record(ck: _Checker, rec: Mapping[str, Any], prefix: str, tolerance_keys: tuple[str, ...]) -> None:
    ck.field(rec, "n_images", prefix, "int", minimum=1)
    for key in ("max_abs_score", "max_rel_score", "max_abs_map"):
        ck.field(rec, key, prefix, "number", minimum=0)
    rng = rec.get("map_range", _MISSING)
    ok_list = isinstance(rng, list) and len(rng) == 2 and all(is_number(v) for v in rng)
    if not (is_number(rng) or ok_list):
        ck.add(f"{prefix}.map_range", f"expected a finite number or [min, max], got {describe(rng)}")
    ck.field(rec, "labels_identical", prefix, "bool")
    tol = ck.obj(rec, "tolerance", prefix)
    if tol is not _MISSING:
        for key in tolerance_keys:
            ck.field(tol, key, f"{prefix}.tolerance", "number", minimum=0)


def _check_provenance(ck: _Checker, m: Mapping[str, Any]) -> None:
    ck.obj(m, "defects", "", nullable=True)
    ck.obj(m, "tiling", "", nullable=True)
    ck.obj(m, "environment", "")
    run = ck.obj(m, "source_run", "")
    if run is not _MISSING:
        ck.field(run, "path", "source_run", "str")
        digest = run.get("config_sha256", _MISSING)
        if not (isinstance(digest, str) and _HEX64.match(digest)):
            ck.add("source_run.config_sha256", f"expected 64 lowercase hex characters, got {describe(digest)}")
        ck.field(run, "metrics", "source_run", "object")
    parity = ck.obj(m, "parity", "")
    if parity is not _MISSING:
        fp32 = ck.obj(parity, "fp32", "parity")
        if fp32 is not _MISSING:
            _check_parity_record(ck, fp32, "parity.fp32", ("score_abs", "map_abs"))
        for reduced in ("fp16", "int8"):
            record = ck.field(parity, reduced, "parity", "object", nullable=True, optional=True)
            if isinstance(record, dict):
                _check_parity_record(ck, record, f"parity.{reduced}", ("score_rel",))
    golden = ck.obj(m, "golden", "")
    if golden is not _MISSING:
        ck.rel_path(golden, "file", "golden")
        ck.field(golden, "n_images", "golden", "int", minimum=1)
        ck.field(golden, "n_sources", "golden", "int", minimum=0, optional=True)


def _check_files(ck: _Checker, m: Mapping[str, Any]) -> set[str] | None:
    files = ck.field(m, "files", "", "array")
    if files is _MISSING:
        return None
    listed: set[str] = set()
    for i, entry in enumerate(files):
        prefix = f"files[{i}]"
        if not isinstance(entry, dict):
            ck.add(prefix, f"expected an object {{path, sha256, bytes}}, got {describe(entry)}")
            continue
        path = ck.rel_path(entry, "path", prefix)
        digest = entry.get("sha256", _MISSING)
        if not (isinstance(digest, str) and _HEX64.match(digest)):
            ck.add(f"{prefix}.sha256", f"expected 64 lowercase hex characters, got {describe(digest)}")
        ck.field(entry, "bytes", prefix, "int", minimum=0)
        if path is _MISSING:
            continue
        if path in (MANIFEST_NAME, SIGNATURE_NAME):
            ck.add(f"{prefix}.path", f"{path!r} must not be listed (it cannot hash itself)")
        if path in listed:
            ck.add(f"{prefix}.path", f"duplicate entry {path!r}")
        listed.add(path)
    return listed


def _check_references(ck: _Checker, m: Mapping[str, Any], listed: set[str]) -> None:
    """Engines and golden must be among the listed files."""
    for i, eng in enumerate(m.get("engines") or []):
        f = eng.get("file") if isinstance(eng, dict) else None
        if isinstance(f, str) and relative_path_problem(f) is None and f not in listed:
            ck.add(f"engines[{i}].file", f"{f!r} is not listed in files")
    golden = m.get("golden")
    gf = golden.get("file") if isinstance(golden, dict) else None
    if isinstance(gf, str) and relative_path_problem(gf) is None and gf not in listed:
        ck.add("golden.file", f"{gf!r} is not listed in files")


def _check_finite(ck: _Checker, obj: Any, path: str) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_finite(ck, value, _kp(path, str(key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_finite(ck, value, f"{path}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj) and path not in ck.flagged:
        ck.add(path, f"expected a finite number or null, got {describe(obj)} (JSON has no NaN/Infinity)")


# ----------------------------------------------------------------------------- entry points
def manifest_problems(data: object) -> list[str]:
    """Every schema problem in ``data`` as ``"<key path>: <what was expected>, got <what>"``."""
    ck = _Checker()
    if not isinstance(data, dict):
        return [f"(root): expected a JSON object, got {describe(data)}"]
    version = data.get("schema_version", _MISSING)
    try:
        major, _minor = parse_schema_version(None if version is _MISSING else version)
    except ValueError:
        return [f"schema_version: expected a version string like {SCHEMA_VERSION!r}, got {describe(version)}"]
    if major != SUPPORTED_MAJOR:
        return [
            f"schema_version: bundle schema version {version!r} is not supported; this reader supports "
            f"major version {SUPPORTED_MAJOR} (schema {SUPPORTED_MAJOR}.x, current {SCHEMA_VERSION})"
        ]
    _check_toolkit(ck, data)
    _check_model_input(ck, data)
    _check_outputs(ck, data)
    _check_engines(ck, data)
    _check_thresholds(ck, data)
    _check_provenance(ck, data)
    _check_recalibrations(ck, data)
    listed = _check_files(ck, data)
    if listed is not None:
        _check_references(ck, data, listed)
    _check_finite(ck, data, "")
    return ck.problems


def validate_manifest(data: dict) -> None:
    """Raise one ``InvalidBundleError`` listing every schema problem; return ``None`` when valid."""
    problems = manifest_problems(data)
    if problems:
        raise InvalidBundleError(format_problems("invalid bundle manifest", problems), problems=problems)


def listed_files(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{path: entry}`` for the manifest's ``files`` (assumes a validated manifest)."""
    return {entry["path"]: entry for entry in manifest.get("files", [])}

