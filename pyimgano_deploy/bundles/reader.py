"""Read and verify a bundle directory.

``read_bundle`` refuses, with a message naming the file: a missing directory or bundle.json, a
bundle.json that is a symlink or not plausible JSON (size, depth, integer limits), a schema
problem (see ``manifest.validate_manifest``), an unknown major schema version, a listed path
that leaves the bundle (absolute, ``..``, backslash, symlink resolving outside), a listed file
that is missing, a file on disk that is not listed, the leftover of an interrupted export, and
values that contradict each other (a crop that does not give the model input, a legacy
infer_config.json that disagrees) — all InvalidBundleError, exit code 3; a size or sha256 that differs from the
manifest, or a digest other than the pinned one (exit code 4); a missing or bad signature when
a public key is given (exit code 7). Structural problems are reported before checksums.
:func:`engine_file_problems` checks an engine file's content before the runtime opens it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyimgano_deploy.bundles import io_contract as io
from pyimgano_deploy.bundles.errors import ChecksumMismatchError, InvalidBundleError, format_problems
from pyimgano_deploy.bundles.golden import load_golden
from pyimgano_deploy.bundles.hashing import sha256_file
from pyimgano_deploy.bundles.identity import bundle_digest, check_expected_digest, read_manifest_file
from pyimgano_deploy.bundles.manifest import (
    INCOMPLETE_MARKER,
    INFER_CONFIG_NAME,
    MANIFEST_NAME,
    SUPPORTED_MAJOR,
    leftover_dir_problem,
    listed_files,
    parse_schema_version,
    relative_path_problem,
    validate_manifest,
)
from pyimgano_deploy.bundles.onnx_refs import NotOnnxError, external_data_locations
from pyimgano_deploy.bundles.signing import SIGNATURE_NAME, verify_bundle_signature
from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration

if TYPE_CHECKING:
    from pyimgano_deploy.inputs.preprocess import Preprocess


def read_json_file(path: Path, what: str) -> Any:  # for infer_config.json of schema-1.0 bundles
    """Parse a JSON file; ``InvalidBundleError`` naming the file (and line/column) otherwise."""
    if not path.is_file():
        raise InvalidBundleError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidBundleError(f"cannot read {what} {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidBundleError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


@dataclass
class Bundle:
    """A verified bundle directory and its manifest (bundle.json contents)."""

    root: Path
    manifest: dict[str, Any]
    checksums_verified: bool = field(default=False)
    #: ``sha256:<hex>`` of the canonical manifest: pins the whole bundle
    digest: str = ""
    #: the verified ``bundle.sig`` record when a public key was given, else ``None``
    signature: dict[str, Any] | None = None

    @property
    def schema_version(self) -> str:
        return str(self.manifest["schema_version"])

    def has_file(self, rel: str) -> bool:
        """Whether ``rel`` is listed in the manifest's ``files``."""
        return rel in listed_files(self.manifest)

    def file(self, rel: str) -> Path:
        """Absolute path of the listed file ``rel`` (InvalidBundleError when not listed or unsafe)."""
        problem = relative_path_problem(rel)
        if problem:
            raise InvalidBundleError(f"{self.root}: {problem}")
        if not self.has_file(rel):
            raise InvalidBundleError(f"{self.root}: {rel!r} is not listed in {MANIFEST_NAME} files")
        return self.root / rel

    @property
    def engines(self) -> list[dict[str, Any]]:
        """The manifest's engine records (copies), in manifest order."""
        return [dict(e) for e in self.manifest["engines"]]

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return int(self.manifest["input"]["height"]), int(self.manifest["input"]["width"])

    @cached_property
    def preprocess(self) -> "Preprocess":
        """``Preprocess.from_dict(manifest["input"]["preprocess"])``."""
        from pyimgano_deploy.inputs.preprocess import Preprocess

        try:
            return Preprocess.from_dict(self.manifest["input"]["preprocess"])
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidBundleError(f"{self.root / MANIFEST_NAME}: input.preprocess: {exc}") from exc

    def _threshold(self, key: str) -> ThresholdCalibration | None:
        record = self.manifest["thresholds"].get(key)
        if record is None:
            return None
        try:
            return ThresholdCalibration.from_dict(record)
        except (ValueError, TypeError) as exc:
            raise InvalidBundleError(f"{self.root / MANIFEST_NAME}: thresholds.{key}: {exc}") from exc

    @property
    def image_threshold(self) -> ThresholdCalibration | None:
        return self._threshold("image")

    @property
    def pixel_threshold(self) -> ThresholdCalibration | None:
        return self._threshold("pixel")

    @property
    def defects_block(self) -> dict[str, Any] | None:
        """The manifest's ``defects`` defaults (``None``: the bundle sets none)."""
        return self.manifest.get("defects")

    @property
    def trained_u16_max(self) -> int | None:
        """The full-scale value the training set declared for its 16-bit files (``input.u16_max``;
        ``None``: the set was 8-bit, or the bundle predates the key)."""
        return self.manifest["input"].get(io.U16_MAX_KEY)

    @property
    def trained_colour(self) -> str | None:
        """Whether the training set's images were ``grey``, in ``colour`` or ``mixed``
        (``input.trained_colour``; ``None``: the bundle predates the key)."""
        return self.manifest["input"].get(io.TRAINED_COLOUR_KEY)

    @property
    def trained_aspect(self) -> list[float] | None:
        """``[min, max]`` width / height of the training set's images (``input.trained_aspect``;
        ``None``: the bundle predates the key)."""
        return self.manifest["input"].get(io.TRAINED_ASPECT_KEY)

    @property
    def tiling_block(self) -> dict[str, Any] | None:
        """The manifest's ``tiling`` block (``None``: whole images are scored)."""
        return self.manifest.get("tiling")

    def load_golden(self) -> dict[str, np.ndarray]:
        """golden.npz arrays, checked against ``golden.n_images`` and the input size."""
        path = self.file(self.manifest["golden"]["file"])
        data = load_golden(path)
        n_expected = int(self.manifest["golden"]["n_images"])
        images = data["images"]
        problems = []
        if images.shape[0] != n_expected:
            problems.append(f"holds {images.shape[0]} images, manifest golden.n_images says {n_expected}")
        if tuple(images.shape[1:3]) != self.input_size:
            problems.append(
                f"images are {images.shape[1]}x{images.shape[2]}, manifest input is "
                f"{self.input_size[0]}x{self.input_size[1]} (height x width)"
            )
        if problems:
            raise InvalidBundleError(format_problems(f"{path}: golden file disagrees with the manifest", problems))
        return data


def _read_infer_config(path: Path) -> dict[str, Any]:
    data = read_json_file(path, INFER_CONFIG_NAME)
    if not isinstance(data, dict):
        raise InvalidBundleError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        major, _ = parse_schema_version(data.get("schema_version"))
    except ValueError as exc:
        raise InvalidBundleError(f"{path}: schema_version: {exc}") from exc
    if major != SUPPORTED_MAJOR:
        raise InvalidBundleError(
            f"{path}: schema_version {data['schema_version']!r} is not supported; expected major {SUPPORTED_MAJOR}"
        )
    return data


def _check_listed_paths(root: Path, real_root: Path, manifest: dict[str, Any]) -> list[str]:
    """Presence, type and containment of each listed file."""
    problems = []
    for rel in listed_files(manifest):
        full = root / rel
        if not os.path.lexists(full):
            problems.append(f"{rel}: listed in {MANIFEST_NAME} but missing")
            continue
        real = full.resolve()
        if not real.is_relative_to(real_root):
            problems.append(f"{rel}: resolves to {real}, outside the bundle directory (symlink?)")
            continue
        if not real.is_file():
            problems.append(f"{rel}: is not a regular file")
    return problems


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    """Files (and symlinks) on disk that the manifest does not list, bundle.json and bundle.sig aside."""
    extra = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in dirnames:
            if (here / name).is_symlink():
                rel = (here / name).relative_to(root).as_posix()
                if not any(p.startswith(rel + "/") for p in listed):
                    extra.append(rel)
        for name in filenames:
            rel = (here / name).relative_to(root).as_posix()
            if rel not in (MANIFEST_NAME, SIGNATURE_NAME, INCOMPLETE_MARKER) and rel not in listed:
                extra.append(rel)
    return [f"{rel}: unlisted file (present on disk, not in {MANIFEST_NAME} files)" for rel in sorted(extra)]


def _check_legacy_infer_config(root: Path, manifest: dict[str, Any]) -> list[str]:
    """A schema-1.0 bundle's infer_config.json (never read by the runtime any more) must carry
    the manifest's threshold values, or the bundle is inconsistent."""
    if INFER_CONFIG_NAME not in listed_files(manifest):
        return []
    config = _read_infer_config(root / INFER_CONFIG_NAME)
    thresholds = config.get("thresholds")
    if not isinstance(thresholds, dict):
        return []
    problems = []
    for key in ("image", "pixel"):
        ours = (manifest["thresholds"].get(key) or {}).get("value")
        theirs = thresholds.get(key)
        theirs = theirs.get("value") if isinstance(theirs, dict) else None
        if theirs is None and ours is None:
            continue
        if not (isinstance(theirs, (int, float)) and ours is not None and float(theirs) == float(ours)):
            problems.append(
                f"{INFER_CONFIG_NAME}: thresholds.{key}.value is {theirs!r}, "
                f"{MANIFEST_NAME} thresholds.{key}.value is {ours!r}"
            )
    return problems


def _check_content(manifest: dict[str, Any]) -> list[str]:
    """Manifest values that contradict each other: the crop versus the model input."""
    from pyimgano_deploy.inputs.preprocess import Preprocess

    inp = manifest["input"]
    try:
        out_hw = Preprocess.from_dict(inp["preprocess"]).output_size
    except (ValueError, TypeError) as exc:
        return [f"input.preprocess: {exc}"]
    if tuple(out_hw) != (inp["height"], inp["width"]):
        return [
            f"input.preprocess produces {out_hw[0]}x{out_hw[1]} (HxW) images, but input.height/width "
            f"say the model takes {inp['height']}x{inp['width']}"
        ]
    return []


def engine_file_problems(bundle: "Bundle", entry: dict[str, Any]) -> list[str]:
    """Why the engine file of ``entry`` is not what the entry says: not an ONNX model, not a
    TensorRT plan, or ONNX external data outside the bundle or not listed. Checked before an
    engine is opened, so a broken bundle is exit 3, not "cannot load here" (exit 5)."""
    rel = str(entry["file"])
    if entry.get("format") == "tensorrt":
        return [] if rel.endswith(".plan") else [f"engine {rel!r} is not a TensorRT plan (expected a .plan file)"]
    try:
        locations = external_data_locations(bundle.file(rel))
    except NotOnnxError as exc:
        return [f"engine {rel!r} is not an ONNX model ({exc})"]
    problems = []
    base = Path(rel).parent.as_posix()
    for loc in locations:
        target = loc if base in ("", ".") else f"{base}/{loc}"
        bad = relative_path_problem(loc) or relative_path_problem(target)
        if bad:
            problems.append(f"engine {rel!r} has external data {loc!r} outside the bundle: {bad}")
        elif not bundle.has_file(target):
            problems.append(f"engine {rel!r} needs external data {target!r}, which is not listed in files")
    return problems


def _verify_checksums(root: Path, manifest: dict[str, Any], *, hash_files: bool) -> None:
    problems: list[str] = []
    mismatches: list[dict[str, Any]] = []
    for rel, entry in listed_files(manifest).items():
        full = root / rel
        size = full.stat().st_size
        digest = sha256_file(full) if hash_files else None
        bad_size = size != entry["bytes"]
        bad_hash = digest is not None and digest != entry["sha256"]
        if not (bad_size or bad_hash):
            continue
        mismatches.append(
            {
                "path": rel,
                "expected_bytes": entry["bytes"],
                "actual_bytes": size,
                "expected_sha256": entry["sha256"],
                "actual_sha256": digest,
            }
        )
        if bad_hash:
            problems.append(f"{rel}: sha256 mismatch, expected {entry['sha256']}, actual {digest}")
        if bad_size:
            problems.append(f"{rel}: size mismatch, expected {entry['bytes']} bytes, actual {size} bytes")
    if problems:
        raise ChecksumMismatchError(
            format_problems(f"{root}: checksum mismatch", problems), problems=problems, mismatches=mismatches
        )


def read_bundle(
    path: str | os.PathLike[str],
    *,
    verify_checksums: bool = True,
    expected_digest: str | None = None,
    public_key: str | os.PathLike[str] | None = None,
    allow_incomplete: bool = False,
) -> Bundle:
    """Load and verify the bundle at ``path`` (the directory, or its bundle.json).

    ``verify_checksums=False`` skips sha256 hashing only; schema, path safety, presence,
    unlisted files, content and file sizes are still checked. ``expected_digest``
    (``sha256:HEX``) pins the bundle (``DigestMismatchError``, exit 4); ``public_key`` (a PEM
    file) requires a valid ``bundle.sig`` (``SignatureError``, exit 7). ``allow_incomplete``
    is for the exporter's own self-check of the folder it is still writing.
    """
    root = Path(path)
    if root.name == MANIFEST_NAME and not root.is_dir():
        root = root.parent
    if not root.is_dir():
        raise InvalidBundleError(f"bundle directory not found: {root}")
    root = root.resolve()
    if not allow_incomplete:
        problem = leftover_dir_problem(root)
        if problem:
            raise InvalidBundleError(f"{root}: {problem}")
    manifest_path = root / MANIFEST_NAME
    manifest = read_manifest_file(manifest_path)
    try:
        validate_manifest(manifest)
    except InvalidBundleError as exc:
        raise InvalidBundleError(
            format_problems(f"{manifest_path}: invalid bundle manifest", exc.problems), problems=exc.problems
        ) from exc
    problems = _check_listed_paths(root, root, manifest)
    problems += _unlisted(root, set(listed_files(manifest)))
    if problems:
        raise InvalidBundleError(format_problems(f"{root}: invalid bundle", problems), problems=problems)
    digest = bundle_digest(manifest)
    check_expected_digest(digest, expected_digest, str(root))
    _verify_checksums(root, manifest, hash_files=verify_checksums)
    problems = _check_content(manifest) + _check_legacy_infer_config(root, manifest)
    if problems:
        raise InvalidBundleError(format_problems(f"{root}: inconsistent bundle", problems), problems=problems)
    signature = None if public_key is None else verify_bundle_signature(root, digest, public_key)
    return Bundle(root=root, manifest=manifest, checksums_verified=verify_checksums, digest=digest, signature=signature)
