"""TFRecord framing and the event records, as bytes: tensorboardX's `record_writer` layer.

Pure functions (and bounded caches), run on the sink's thread (the delivery agent's, or the caller's in sync
mode). Needs the `tensorboard` extra: `sink` imports this module behind the guard that reports what
is missing.

Scalar Events are written in protobuf's wire format by hand (a cached prefix per key, then the
float): byte for byte what `Event.SerializeToString()` gives (a test checks it), at ~1/10 the cost.
The rare records (text, images, the config) use tensorboardX's protobuf classes.
"""
from __future__ import annotations

import functools
import logging
import struct
from ctypes import c_float
from typing import Any, Iterator, Mapping

from crc32c import crc32c as _crc32c
from tensorboardX.proto import event_pb2, summary_pb2, types_pb2

from ...core.errors import PermanentSinkError
from ...journal.events import PNG_SIGNATURE
from ...core.redact import flatten_config

__all__ = ["CONFIG_TAG"]

_logger = logging.getLogger(__name__)

CONFIG_TAG = "config"
_MAX_CACHED_TAGS = 10_000  #: scalar tags whose encoded prefix is kept
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> Summary.Image.colorspace
# The text plugin's metadata; its content, TextPluginData(version=0), serialises to no bytes.
_TEXT_METADATA = {"plugin_data": {"plugin_name": "text", "content": b""}}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f").pack
_WALL_TIME = struct.Struct("<Bd")  # Event field 1, a double: key byte 0x09, then 8 bytes
_NO_WALL_TIME = _WALL_TIME.pack(0x09, 0.0)  # proto3 leaves a field at its default out
_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _masked_crc(data: bytes) -> bytes:
    """TFRecord's masked CRC-32C (so a CRC stored inside CRC'd data does not look like a CRC)."""
    crc = _crc32c(data)
    return _U32.pack((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=4096)  # record lengths repeat: a scalar record's depends on its keys only
def _record_header(length: int) -> bytes:
    header = _U64.pack(length)
    return header + _masked_crc(header)


def _frame(data: bytes) -> bytes:
    """One TFRecord: length, its CRC, the data, its CRC."""
    return _record_header(len(data)) + data + _masked_crc(data)


def _varint(value: int) -> bytes:
    if value < 0x80:  # the common cases (steps, tag and value lengths) without the loop
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = []
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=_MAX_CACHED_TAGS)  # thread-safe, and bounded: keys may never repeat
def _tag_prefix(key: str) -> bytes:
    """`key`'s `Summary.Value` up to its value: `0a <len> 0a <len> tag 15`, then the 4-byte float."""
    tag = key.encode()
    value = b"\x0a" + _varint(len(tag)) + tag + b"\x15"
    return b"\x0a" + _varint(len(value) + 4) + value


@functools.lru_cache(maxsize=1024)  # key sets repeat: a loop logs the same dict every step
def _values_packer(keys: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """A struct that packs `Summary.Value`s for `keys` in one call, and its argument template.

    The format alternates each key's cached prefix (`Ns`) with its float32 (`f`); the template
    holds the prefixes at even positions, the values go at the odd ones.
    """
    prefixes = [_tag_prefix(k) for k in keys]
    template: list[Any] = [None] * (2 * len(keys))
    template[0::2] = prefixes
    return struct.Struct("<" + "".join(f"{len(p)}sf" for p in prefixes)).pack, template


def _values_body(values: dict) -> bytes:
    """The `Summary.Value`s of one METRICS event's values, in their order."""
    if len(values) == 1:  # log_metric's event: the prefix and the float, no packer to look up
        for key, value in values.items():
            try:
                return _tag_prefix(key) + _F32(value)
            except OverflowError:
                return _tag_prefix(key) + _F32(c_float(value).value)
    pack, template = _values_packer(tuple(values))
    args = template.copy()
    args[1::2] = values.values()
    try:
        return pack(*args)
    except OverflowError:  # struct refuses what float32 can't hold; C's cast (so protobuf) gives ±inf
        return b"".join([_tag_prefix(k) + _F32(c_float(v).value) for k, v in values.items()])


def _scalar_record(wall_time: float, step: int, *values: dict) -> bytes:
    """A framed `Event(wall_time, step, Summary(value=[...]))` holding every value of `values`."""
    body = _values_body(values[0]) if len(values) == 1 else b"".join(map(_values_body, values))
    wall = _WALL_TIME.pack(0x09, wall_time)
    return _frame(b"".join((
        b"" if wall == _NO_WALL_TIME else wall,
        b"\x10" + _varint(step) if step else b"",  # field 2, step: a varint
        b"\x2a", _varint(len(body)), body,  # field 5, summary: length-delimited
    )))


def _summary_record(step: int, wall_time: float, **value: Any) -> bytes:
    """A framed Event holding one `Summary.Value(**value)`."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(**value)])
    return _frame(event_pb2.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString())


def _text_record(tag: str, text: str, step: int, wall_time: float) -> bytes:
    # An empty (but present) shape: a scalar string, shown as one markdown document, not a table.
    tensor = {"dtype": types_pb2.DT_STRING, "string_val": [text.encode()], "tensor_shape": {}}
    return _summary_record(step, wall_time, tag=tag, metadata=_TEXT_METADATA, tensor=tensor)


def _image_record(tag: str, png: bytes, step: int, wall_time: float) -> bytes:
    if len(png) < 26 or png[:8] != PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise PermanentSinkError(f"figure {tag!r} is not a PNG image (bad signature or header)")
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the chunk a PNG must start with
    colorspace = _PNG_CHANNELS.get(png[25], 3)
    image = {"height": height, "width": width, "colorspace": colorspace, "encoded_image_string": png}
    return _summary_record(step, wall_time, tag=tag, image=image)


def _config_rows(config: Mapping[str, Any]) -> Iterator[str]:
    def cell(value: Any) -> str:  # a '|' would end the cell and a newline the row
        return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    for key, value in flatten_config(config):
        yield f"| {cell(key)} | {cell(value)} |"


def _config_record(config: Mapping[str, Any], step: int, wall_time: float) -> bytes:
    """The config as a two-column markdown table of flattened `a.b` keys."""
    table = "\n".join(["| key | value |", "| --- | --- |", *_config_rows(config)])
    return _text_record(CONFIG_TAG, table, step, wall_time)
