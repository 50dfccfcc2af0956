"""Bundle errors. Each carries the exit code ``pyimgano-deploy validate`` uses for it.

Messages name the file or the manifest key at fault and what was expected; ``problems``
holds the individual findings when several were collected into one error.
"""

from __future__ import annotations

from typing import Any, Sequence

from pyimgano_deploy.bundles.exit_codes import EXIT_CHECKSUM, EXIT_INVALID, EXIT_SIGNATURE


class BundleError(Exception):
    """Base class for everything wrong with a bundle (exit code 3 unless a subclass says otherwise)."""

    exit_code: int = EXIT_INVALID

    def __init__(self, message: str, *, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[str] = list(problems) if problems else [message]


class InvalidBundleError(BundleError):
    """Schema violation, missing or unlisted file, unsafe path, unreadable file (exit code 3)."""

    exit_code = EXIT_INVALID


class ChecksumMismatchError(BundleError):
    """A listed file's size or sha256 differs from the manifest (exit code 4).

    ``mismatches`` holds one dict per file: ``path``, ``expected_bytes``, ``actual_bytes``,
    ``expected_sha256``, ``actual_sha256`` (the latter ``None`` when only the size was checked).
    """

    exit_code = EXIT_CHECKSUM

    def __init__(
        self,
        message: str,
        *,
        problems: Sequence[str] | None = None,
        mismatches: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, problems=problems)
        self.mismatches: list[dict[str, Any]] = list(mismatches or [])


class DigestMismatchError(BundleError):
    """The bundle's digest is not the one the caller pinned (exit code 4, like a checksum)."""

    exit_code = EXIT_CHECKSUM


class SignatureError(BundleError):
    """A required signature is missing, malformed, or does not verify with the key (exit code 7)."""

    exit_code = EXIT_SIGNATURE


def format_problems(header: str, problems: Sequence[str]) -> str:
    """``header`` followed by one indented line per problem."""
    if len(problems) == 1:
        return f"{header}: {problems[0]}"
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{header} ({len(problems)} problems):\n{lines}"
