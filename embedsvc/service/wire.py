"""Which field of a protobuf message holds text that is not UTF-8.

protobuf's parser refuses such a message with "String field had bad UTF-8" and no name, and a
refusal should say what to fix; this walks the wire format alongside the message's descriptor
to name the first such field (``items[0].metadata[0].key``). Only for an error message: any
surprise in the bytes gives None.
"""
from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor


def bad_text_field(descriptor: Descriptor, raw: bytes) -> str | None:
    try:
        return _walk(descriptor, raw, "")
    except Exception:  # noqa: BLE001 - only an error message's detail is at stake
        return None


def _repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 6; ``label`` went in 7
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def _walk(descriptor: Descriptor, raw: bytes, path: str) -> str | None:
    pos, seen = 0, {}
    while pos < len(raw):
        key, pos = _varint(raw, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(raw, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(raw, pos)
            value, pos = raw[pos:pos + size], pos + size
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            name = path + field.name
            if _repeated(field):
                name += f"[{seen.get(number, 0)}]"
                seen[number] = seen.get(number, 0) + 1
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _walk(field.message_type, value, name + ".")
                if found is not None:
                    return found
        else:
            raise ValueError(f"wire type {wire}")
    return None


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
