"""The bit of Kubernetes' protobuf wire format the emulator meets: helm writes its release Secrets as protobuf (no JSON
fallback), and asks for /openapi/v2 as a protobuf gnostic Document.

A body is the 4-byte magic "k8s\\0" then a runtime.Unknown: field 1 TypeMeta (apiVersion 1, kind 2), field 2 the
object's own bytes. A Secret is ObjectMeta 1, data 2 (map entries: key 1, value 2), type 3, stringData 4, immutable 5;
ObjectMeta is name 1, generateName 2, namespace 3, uid 5, resourceVersion 6, generation 7, labels 11, annotations 12.
Objects are given and returned in their JSON form (Secret data base64-encoded, as the JSON API shows it).
"""
from __future__ import annotations

import base64
from typing import Iterator

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """The bytes are not the protobuf this module reads."""


# ------------------------------------------------------------ wire format

def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ProtobufError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field: an int for varints and fixed widths, bytes for length-delimited ones."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, i = _varint(data, i)
        elif wire == BYTES:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise ProtobufError(f"field {number} runs past the end")
            value, i = data[i:i + n], i + n
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            value, i = int.from_bytes(data[i:i + width], "little"), i + width
        else:
            raise ProtobufError(f"field {number} has unsupported wire type {wire}")
        yield number, value


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number: int, value: int | str | bytes) -> bytes:
    """One field: ints as varints, str and bytes length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return _encode_varint(number << 3 | VARINT) + _encode_varint(int(value))
    raw = value.encode() if isinstance(value, str) else value
    return _encode_varint(number << 3 | BYTES) + _encode_varint(len(raw)) + raw


def _map(number: int, entries: dict[str, str | bytes]) -> bytes:
    return b"".join(field(number, field(1, k) + field(2, v)) for k, v in sorted(entries.items()))


def _entry(raw: bytes) -> tuple[str, bytes]:
    parts = dict(fields(raw))
    return bytes(parts.get(1, b"")).decode(), bytes(parts.get(2, b""))


# ------------------------------------------------------------ Kubernetes objects

_META_STRINGS = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}


def _decode_meta(raw: bytes) -> dict:
    meta: dict = {}
    for number, value in fields(raw):
        if number in _META_STRINGS and value:  # Go writes empty strings too
            meta[_META_STRINGS[number]] = value.decode()
        elif number == 7 and value:
            meta["generation"] = value
        elif number in (11, 12):
            key, val = _entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = val.decode()
    return meta


def _encode_meta(meta: dict) -> bytes:
    out = b"".join(field(n, meta[k]) for n, k in sorted(_META_STRINGS.items()) if meta.get(k))
    if meta.get("generation"):
        out += field(7, int(meta["generation"]))
    return out + _map(11, meta.get("labels") or {}) + _map(12, meta.get("annotations") or {})


def decode_secret(body: bytes) -> dict:
    """A Secret from a protobuf request body, in its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtobufError("no k8s protobuf magic")
    unknown = dict(fields(body[len(MAGIC):]))
    type_meta = {n: v.decode() for n, v in fields(unknown.get(1, b""))}
    if type_meta.get(2, "Secret") != "Secret":
        raise ProtobufError(f"expected a Secret, got a {type_meta[2]}")
    secret: dict = {"apiVersion": type_meta.get(1) or "v1", "kind": "Secret", "metadata": {}}
    for number, value in fields(unknown.get(2, b"")):
        if number == 1:
            secret["metadata"] = _decode_meta(value)
        elif number in (2, 4):
            key, val = _entry(value)
            if number == 2:
                secret.setdefault("data", {})[key] = base64.b64encode(val).decode()
            else:
                secret.setdefault("stringData", {})[key] = val.decode()
        elif number == 3:
            secret["type"] = value.decode()
        elif number == 5:
            secret["immutable"] = bool(value)
    return secret


def encode_secret(secret: dict) -> bytes:
    """A Secret in its JSON form as the protobuf body a Kubernetes client sends."""
    body = field(1, _encode_meta(secret.get("metadata") or {}))
    body += _map(2, {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()})
    if secret.get("type"):
        body += field(3, secret["type"])
    body += _map(4, secret.get("stringData") or {})
    if secret.get("immutable") is not None:
        body += field(5, bool(secret["immutable"]))
    type_meta = field(1, secret.get("apiVersion") or "v1") + field(2, "Secret")
    return MAGIC + field(1, type_meta) + field(2, body)


def openapi_v2_document(title: str, version: str) -> bytes:
    """The smallest gnostic openapi_v2.Document client-go accepts: swagger 1, info 2 (title 1, version 2)."""
    return field(1, "2.0") + field(2, field(1, title) + field(2, version))
