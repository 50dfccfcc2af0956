"""Ed25519 signatures over the bundle digest (``cryptography``, an optional extra).

``bundle.sig`` beside bundle.json holds ``{schema_version, algorithm: "ed25519", digest,
signature (base64), public_key_sha256}``. The signature is over the ASCII digest string
(``sha256:<hex>``); since the manifest lists every file's sha256, it covers the whole bundle.
bundle.sig itself is not listed in the manifest (it cannot hash itself). Keys are PEM files:
a PKCS#8 private key, and a SubjectPublicKeyInfo public key, as ``keygen`` writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pyimgano_deploy.bundles.errors import SignatureError

SIGNATURE_NAME = "bundle.sig"
SIGNATURE_SCHEMA_VERSION = "1.0"
ALGORITHM = "ed25519"
INSTALL_HINT = "pip install 'pyimgano-deploy[sign]'  (or: pip install cryptography)"
PRIVATE_KEY_NAME = "bundle_signing.key"
PUBLIC_KEY_NAME = "bundle_signing.pub"


class SigningUnavailableError(SignatureError):
    """The ``cryptography`` package is not installed (a signature cannot be made or checked)."""


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SigningUnavailableError(f"bundle signatures need the 'cryptography' package: {INSTALL_HINT}") from exc
    return serialization, ed25519


def _raw_public(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_keypair(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``out_dir``; refuses to overwrite an existing key file."""
    serialization, ed25519 = _crypto()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists; keys are never overwritten (choose another --out)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _load_key(path: str | os.PathLike[str], private: bool) -> Any:
    serialization, ed25519 = _crypto()
    kind = "private" if private else "public"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read the {kind} key {path}: {exc.strerror or exc}") from exc
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a PEM {kind} key ({exc})") from exc
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise SignatureError(f"{path}: expected an Ed25519 {kind} key, got {type(key).__name__}")
    return key


def sign_bundle(bundle_dir: str | os.PathLike[str], digest: str, private_key: str | os.PathLike[str]) -> Path:
    """Sign ``digest`` with the PEM private key and write ``bundle.sig`` into ``bundle_dir``."""
    key = _load_key(private_key, private=True)
    record = {
        "schema_version": SIGNATURE_SCHEMA_VERSION,
        "algorithm": ALGORITHM,
        "digest": digest,
        "signature": base64.b64encode(key.sign(digest.encode("ascii"))).decode("ascii"),
        "public_key_sha256": hashlib.sha256(_raw_public(key.public_key())).hexdigest(),
    }
    path = Path(bundle_dir) / SIGNATURE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def verify_bundle_signature(bundle_dir: str | os.PathLike[str], digest: str, public_key: str | os.PathLike[str]) -> dict[str, Any]:
    """Check ``bundle.sig`` against ``digest`` with the PEM public key; the signature record when
    it verifies, ``SignatureError`` (exit 7) naming what is wrong otherwise."""
    key = _load_key(public_key, private=False)
    from cryptography.exceptions import InvalidSignature  # after _load_key: it names the extra when missing
    path = Path(bundle_dir) / SIGNATURE_NAME
    if not path.is_file() or path.is_symlink():
        raise SignatureError(f"{path}: the bundle is not signed (no regular {SIGNATURE_NAME} file); "
                             "sign it with 'export --sign-key KEY'")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SignatureError(f"{path}: unreadable signature file ({type(exc).__name__})") from exc
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM or not isinstance(record.get("signature"), str):
        raise SignatureError(f"{path}: expected an object with algorithm {ALGORITHM!r} and a base64 'signature'")
    if record.get("digest") != digest:
        raise SignatureError(f"{path}: signs digest {record.get('digest')!r}, but the bundle's digest is {digest}")
    try:
        signature = base64.b64decode(record["signature"], validate=True)
        key.verify(signature, digest.encode("ascii"))
    except (ValueError, InvalidSignature) as exc:
        raise SignatureError(f"{path}: the signature does not verify with the public key {public_key}") from exc
    return record


__all__ = [
    "ALGORITHM", "INSTALL_HINT", "PRIVATE_KEY_NAME", "PUBLIC_KEY_NAME", "SIGNATURE_NAME",
    "SigningUnavailableError", "generate_keypair", "sign_bundle", "verify_bundle_signature",
]
