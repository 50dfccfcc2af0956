"""JSONL records → a Parquet table for analytics (pyarrow, streamed in row groups).

The JSONL file stays the record of truth (it is what ``--resume`` continues); the table is
written from it once the run is complete, to a temporary file renamed into place. Columns:
the record's scalar fields (``index``, ``input``, ``status``, ``score``, ``label``,
``threshold``, ``resolved``, ``bundle_digest``, ``timing_ms``, ...), the error's ``type`` /
``message`` / ``stage`` as ``error_type`` / ``error_message`` / ``error_stage``, the input's
``source`` fields as ``source_sha256``, ``source_width`` and so on, the number of defect regions
as ``defect_regions``, and the other nested fields as JSON text (``*_json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from pyimgano_deploy.scale.extras import require_pyarrow

PARQUET_SCHEMA_VERSION = "1.1"  # 1.1: source_* columns
_ROW_GROUP = 10_000
_COLUMNS = {  # name → pyarrow type name; every record gets every column (None when absent)
    "schema_version": "string", "index": "int64", "input": "string", "status": "string", "score": "float64",
    "label": "int8", "threshold": "float64", "resolved": "string", "bundle_digest": "string", "u16_max": "int32",
    "timing_ms": "float64", "error_type": "string", "error_message": "string", "error_stage": "string",
    "defect_regions": "int32", "defects_json": "string", "anomaly_map_json": "string",
    **{f"source_{k}": kind for k, kind in {"sha256": "string", "size_bytes": "int64", "encoding": "string", "input_format": "string",
                                         "width": "int32", "height": "int32", "channels": "int8", "bit_depth": "int8"}.items()},
}


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """One JSONL record as a row of the table's columns."""
    row = {k: record.get(k) for k in _COLUMNS if k in record and not isinstance(record.get(k), (dict, list))}
    error = record.get("error") or {}
    row.update(error_type=error.get("type"), error_message=error.get("message"), error_stage=error.get("stage"))
    source = record.get("source")
    if isinstance(source, dict):
        row.update({f"source_{k}": v for k, v in source.items() if f"source_{k}" in _COLUMNS})
    defects = record.get("defects")
    if defects is not None:
        regions = defects.get("regions") if isinstance(defects, dict) else None
        row["defect_regions"] = len(regions) if isinstance(regions, list) else None
        row["defects_json"] = json.dumps(defects, sort_keys=True)
    if record.get("anomaly_map") is not None:
        row["anomaly_map_json"] = json.dumps(record["anomaly_map"], sort_keys=True)
    return {k: row.get(k) for k in _COLUMNS}


def _chunks(jsonl: Path) -> Iterator[list[dict[str, Any]]]:
    from pyimgano_deploy.runtimes.jsonl import iter_records

    rows: list[dict[str, Any]] = []
    for record in iter_records(jsonl):
        rows.append(flat_row(record))
        if len(rows) == _ROW_GROUP:
            yield rows
            rows = []
    if rows:
        yield rows


def jsonl_to_parquet(jsonl: str | os.PathLike[str], parquet: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the records of ``jsonl`` to ``parquet`` (replaced atomically); returns ``{path, rows}``."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in _COLUMNS.items()],
                       metadata={"pyimgano_deploy.parquet_schema_version": PARQUET_SCHEMA_VERSION, "source_jsonl": str(jsonl)})
    out = Path(parquet)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in _chunks(Path(jsonl)):
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                rows += len(chunk)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": out.as_posix(), "rows": rows}
