"""What an ONNX file refers to outside itself, read without the ``onnx`` package.

The runtime side may not import onnx, yet a bundle must be refused (exit 3, not "engine
cannot load") when its model is not an ONNX model at all, or when a tensor's external data
points outside the bundle. This walks the protobuf wire format of ``ModelProto`` just far
enough to find every ``TensorProto.external_data`` ``location``: graph initializers, sparse
initializers, and tensors and sub-graphs held in node attributes. Large fields (``raw_data``)
are skipped by their length, never copied.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

# Field numbers from onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
# TensorProto, SparseTensorProto, StringStringEntryProto).
_MODEL_GRAPH = 7
_MODEL_IR_VERSION = 1
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_MAX_NESTING = 16


class NotOnnxError(ValueError):
    """The bytes are not a protobuf ``ModelProto`` with a graph."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise NotOnnxError(f"malformed varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """``(field number, wire type, value or (start, end) of a length-delimited field)``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 1:
            pos += 8
            yield field, wire, None
        elif wire == 5:
            pos += 4
            yield field, wire, None
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise NotOnnxError(f"field {field} at byte {pos} runs past the end of its message")
            yield field, wire, (pos, pos + length)
            pos += length
        else:
            raise NotOnnxError(f"unsupported protobuf wire type {wire} at byte {pos}")
        if pos > end:
            raise NotOnnxError("a fixed-width field runs past the end of its message")


def _tensor_locations(buf: memoryview, span: tuple[int, int], out: list[str]) -> None:
    for field, wire, value in _fields(buf, *span):
        if field == _TENSOR_EXTERNAL_DATA and wire == 2:
            key = val = None
            for f2, w2, v2 in _fields(buf, *value):
                if w2 == 2 and f2 in (_ENTRY_KEY, _ENTRY_VALUE):
                    text = bytes(buf[v2[0] : v2[1]]).decode("utf-8", "replace")
                    key, val = (text, val) if f2 == _ENTRY_KEY else (key, text)
            if key == "location" and val is not None:
                out.append(val)


def _graph_locations(buf: memoryview, span: tuple[int, int], out: list[str], depth: int) -> None:
    if depth > _MAX_NESTING:
        raise NotOnnxError("sub-graphs nested too deeply")
    for field, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if field == _GRAPH_INITIALIZER:
            _tensor_locations(buf, value, out)
        elif field == _GRAPH_SPARSE:
            for f2, w2, v2 in _fields(buf, *value):
                if w2 == 2 and f2 in (_SPARSE_VALUES, _SPARSE_INDICES):
                    _tensor_locations(buf, v2, out)
        elif field == _GRAPH_NODE:
            for f2, w2, v2 in _fields(buf, *value):
                if f2 != _NODE_ATTRIBUTE or w2 != 2:
                    continue
                for f3, w3, v3 in _fields(buf, *v2):
                    if w3 != 2:
                        continue
                    if f3 in (_ATTR_T, _ATTR_TENSORS):
                        _tensor_locations(buf, v3, out)
                    elif f3 in (_ATTR_G, _ATTR_GRAPHS):
                        _graph_locations(buf, v3, out, depth + 1)


def external_data_locations(path: str | os.PathLike[str]) -> list[str]:
    """Every external-data ``location`` in the ONNX model at ``path``, in file order.

    ``NotOnnxError`` when the file is not a ``ModelProto`` with an IR version and a graph.
    """
    p = Path(path)
    if p.stat().st_size == 0:
        raise NotOnnxError("the file is empty")
    with open(p, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            graphs, has_ir = [], False
            for field, wire, value in _fields(buf, 0, len(buf)):
                has_ir |= field == _MODEL_IR_VERSION and wire == 0
                if field == _MODEL_GRAPH and wire == 2:
                    graphs.append(value)
            if not has_ir or not graphs:
                raise NotOnnxError("no ir_version and graph fields: not an ONNX ModelProto")
            out: list[str] = []
            for span in graphs:
                _graph_locations(buf, span, out, 0)
            return out
        finally:
            buf.release()


__all__ = ["NotOnnxError", "external_data_locations"]
