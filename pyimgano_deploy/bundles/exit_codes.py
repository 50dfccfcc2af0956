"""The exit codes shared by every command (``validate``, ``infer``, ``export``, ``build-engine``, ...): one table.

Release pipelines branch on these numbers, so each one means the same thing in every command.
The README and every command's ``--help`` print :data:`EXIT_CODE_TABLE`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # infer: more failed inputs than --max-errors; any command: an unexpected error
EXIT_USAGE = 2  # a bad option or combination of options (click's own code)
EXIT_INVALID = 3  # invalid bundle: schema, missing/unlisted/unsafe file, inconsistent content
EXIT_CHECKSUM = 4  # a file's sha256/size differs from the manifest, or the digest is not the expected one
EXIT_ENGINE = 5  # no engine of the bundle can load on this machine (GPU, TensorRT version, provider)
EXIT_PARITY = 6  # golden parity failed (engine outputs differ from the eager outputs); compare: a gate failed
EXIT_SIGNATURE = 7  # a signature was required and is missing, malformed or does not verify
EXIT_OUTPUT = 8  # an output is not written: it exists (no --force/--overwrite), is locked, unwritable, disk full

MEANINGS: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_FAILED: "inputs failed (more than --max-errors) or an unexpected error",
    EXIT_USAGE: "usage error (bad option)",
    EXIT_INVALID: "invalid bundle (schema, files, paths, inconsistent content)",
    EXIT_CHECKSUM: "checksum or digest mismatch",
    EXIT_ENGINE: "no engine can load on this machine",
    EXIT_PARITY: "golden parity failure (compare: a gate failed)",
    EXIT_SIGNATURE: "signature missing or invalid",
    EXIT_OUTPUT: "output not written (exists without --force/--overwrite, locked, unwritable, disk full)",
}


def exit_code_help() -> str:
    """The table as click help text (``\\b`` keeps click from re-wrapping it)."""
    rows = "\n".join(f"  {code}  {text}" for code, text in MEANINGS.items())
    return "\b\nExit codes:\n" + rows


EXIT_CODE_TABLE = exit_code_help()

__all__ = [
    "EXIT_CHECKSUM", "EXIT_CODE_TABLE", "EXIT_ENGINE", "EXIT_FAILED", "EXIT_INVALID", "EXIT_OK",
    "EXIT_OUTPUT", "EXIT_PARITY", "EXIT_SIGNATURE", "EXIT_USAGE", "MEANINGS", "exit_code_help",
]
