"""Read Caffe models without Caffe: the prototxt text format and the binary weights.

The res10 face detector ships as a Caffe ``deploy.prototxt`` and ``.caffemodel``. Rather than
depend on Caffe or on generated protobuf classes, this module parses the two formats it needs:
protobuf text (into nested dicts) and protobuf wire format (only the fields that carry layer
names, types and weight blobs).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?|"((?:[^"\\]|\\.)*)"|([{}:])|([^\s{}:"#]+))')


def parse_prototxt(text: str) -> dict:
    """Parse protobuf text format into dicts; every key maps to a list of its values."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"prototxt: cannot parse near {text[pos:pos + 40]!r}")
            break
        pos = m.end()
        if m.group(1) is not None:
            tokens.append(("str", m.group(1)))
        elif m.group(2):
            tokens.append(("punct", m.group(2)))
        elif m.group(3):
            tokens.append(("word", m.group(3)))

    def block(i: int) -> tuple[dict, int]:
        out: dict[str, list] = {}
        while i < len(tokens):
            kind, tok = tokens[i]
            if tok == "}" and kind == "punct":
                return out, i + 1
            key = tok
            i += 1
            if tokens[i] == ("punct", ":"):
                i += 1
            if tokens[i] == ("punct", "{"):
                value, i = block(i + 1)
            else:
                kind, raw = tokens[i]
                value = raw if kind == "str" else _scalar(raw)
                i += 1
            out.setdefault(key, []).append(value)
        return out, i

    result, _ = block(0)
    return result


def _scalar(raw: str):
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw, raw)


# --- protobuf wire format -------------------------------------------------------------------

def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview):
    """Yield (field_number, wire_type, value) for one message; value is int or memoryview."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"caffemodel: unsupported wire type {wire}")
        yield field, wire, value


def _blob(buf: memoryview) -> np.ndarray:
    shape: list[int] = []
    legacy = {}
    data: list[np.ndarray] = []
    for field, wire, value in _fields(buf):
        if field == 7:  # BlobShape
            for f, w, v in _fields(value):
                if f == 1 and w == 2:
                    j = 0
                    while j < len(v):
                        d, j = _varint(v, j)
                        shape.append(d)
                elif f == 1:
                    shape.append(v)
        elif field == 5:  # float data
            if wire == 2:
                data.append(np.frombuffer(bytes(value), dtype="<f4"))
            else:
                data.append(np.array([struct.unpack("<f", bytes(value))[0]], np.float32))
        elif field == 8 and wire == 2:  # double data
            data.append(np.frombuffer(bytes(value), dtype="<f8").astype(np.float32))
        elif field in (1, 2, 3, 4):  # legacy num/channels/height/width
            legacy[field] = value
    arr = np.concatenate(data) if data else np.zeros(0, np.float32)
    if not shape and legacy:
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    return arr.reshape(shape) if shape else arr


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Map each layer name in a ``.caffemodel`` to its weight blobs, in Caffe's order."""
    buf = memoryview(Path(path).read_bytes())
    layers: dict[str, list[np.ndarray]] = {}
    for field, _, value in _fields(buf):
        if field not in (100, 2):  # NetParameter.layer (new) or .layers (V1)
            continue
        name, blobs = None, []
        blob_field = 7 if field == 100 else 6
        for f, _, v in _fields(value):
            if f == 1:
                name = bytes(v).decode()
            elif f == blob_field:
                blobs.append(_blob(v))
        if name is not None and blobs:
            layers[name] = blobs
    if not layers:
        raise ValueError(f"{path}: no layers with weights found; is this a .caffemodel file?")
    return layers
