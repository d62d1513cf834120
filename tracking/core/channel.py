"""Length-prefixed pickled messages over a stream socket.

Runs on whichever thread calls it; one message at a time per socket (callers that share a socket
serialise their calls). Used by the MLflow sink's helper process (`tracking.sinks.mlflow`) and
by the delivery agent's control channel (`tracking.agent`), whose training-process side reads and
writes without blocking (`frame`, `FrameReader`).

A message is an 8-byte big-endian length, then that many bytes of pickle. Both ends are this
package, in processes of the same user, so pickle is safe here: never point it at a socket that
someone else can write to.
"""
from __future__ import annotations

import logging
import pickle
import socket
import struct
from typing import Any, Iterator

__all__ = ["send_msg", "recv_msg", "recv_exact", "frame", "FrameReader"]

_logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")


def frame(message: Any) -> bytes:
    """One message as it travels: its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def send_msg(sock: socket.socket, message: Any) -> None:
    sock.sendall(frame(message))  # one call: a message is one write, not two


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks += chunk
    return bytes(chunks)


def recv_msg(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(recv_exact(sock, _HEADER.size))
    return pickle.loads(recv_exact(sock, size))


class FrameReader:
    """Messages out of a byte stream read in pieces (a non-blocking socket's `recv`s)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        """The messages `data` completes, in order, one at a time: those before a broken one are
        handed over before `pickle.loads` raises for it."""
        self._buffer += data
        return self._messages()

    def _messages(self) -> Iterator[Any]:
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size:end])
            del self._buffer[:end]
            yield pickle.loads(payload)
