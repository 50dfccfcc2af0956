"""Deployment bundles: manifest schema, writing, reading and verification (stdlib + numpy only).

Never imports torch, onnx or onnxruntime; see ARCHITECTURE.md §3 "Bundle".
"""

from pyimgano_deploy.bundles.environment import capture_environment
from pyimgano_deploy.bundles.errors import (
    BundleError,
    ChecksumMismatchError,
    DigestMismatchError,
    InvalidBundleError,
    SignatureError,
)
from pyimgano_deploy.bundles.golden import GOLDEN_KEYS, load_golden, save_golden
from pyimgano_deploy.bundles.hashing import sha256_file
from pyimgano_deploy.bundles.identity import bundle_digest, parse_digest
from pyimgano_deploy.bundles.manifest import (
    INFER_CONFIG_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    canonical_json,
    config_sha256,
    manifest_problems,
    relative_path_problem,
    utc_now_iso,
    validate_manifest,
)
from pyimgano_deploy.bundles.reader import Bundle, read_bundle
from pyimgano_deploy.bundles.writer import write_manifest

__all__ = [
    "Bundle",
    "BundleError",
    "ChecksumMismatchError",
    "DigestMismatchError",
    "GOLDEN_KEYS",
    "INFER_CONFIG_NAME",
    "InvalidBundleError",
    "SignatureError",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "bundle_digest",
    "canonical_json",
    "capture_environment",
    "config_sha256",
    "load_golden",
    "manifest_problems",
    "parse_digest",
    "read_bundle",
    "relative_path_problem",
    "save_golden",
    "sha256_file",
    "utc_now_iso",
    "validate_manifest",
    "write_manifest",
]
