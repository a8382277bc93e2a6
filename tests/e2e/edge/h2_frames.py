"""A bare HTTP/2 client that shows the frames a server sends, for what HTTP client libraries
hide: whether a response arrived whole before the server reset the stream (RFC 9113 §8.1).

It sends one request on stream 1 (headers as HPACK literals, no Huffman, no indexing), then
body DATA frames as flow control allows, until the server ends or resets the stream.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from tools.stack.certs import CertPaths

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
MAX_FRAME = 16384


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out, value = [limit], value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _literal(name: str, value: str) -> bytes:
    """A header field as a literal without indexing, new name, raw strings."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(raw_name), 7) + raw_name + _hpack_int(len(raw_value), 7) + raw_value


class _Connection:
    def __init__(self, addr: str, tls: CertPaths) -> None:
        host, _, port = addr.rpartition(":")
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(str(tls.cert), str(tls.key))
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(
            socket.create_connection((host, int(port)), timeout=10), server_hostname=host
        )
        assert self.sock.selected_alpn_protocol() == "h2"
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frames(self, wait: float) -> list[Frame]:
        """Every whole frame that arrives within `wait` seconds (or at once, if any are buffered)."""
        if not self.sock.pending() and not select.select([self.sock], [], [], wait)[0]:
            return []
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buffer += chunk
                if not self.sock.pending():
                    break
        except (ssl.SSLError, OSError):
            pass
        found = []
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            found.append(Frame(kind, flags, stream, self.buffer[9 : 9 + length]))
            self.buffer = self.buffer[9 + length :]
        return found


def request(
    addr: str,
    tls: CertPaths,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    timeout: float = 20,
) -> list[Frame]:
    """Send one request on stream 1; return the server's frames for stream 1 (and GOAWAY) in order."""
    conn = _Connection(addr, tls)
    try:
        authority = addr
        block = b"".join(
            _literal(k, v)
            for k, v in [(":method", method), (":scheme", "https"), (":path", path), (":authority", authority),
                         *headers.items()]
        )  # fmt: skip
        conn.send(PREFACE + _frame(SETTINGS, 0, 0))
        conn.send(_frame(HEADERS, END_HEADERS | (0 if body else END_STREAM), 1, block))
        stream_window = connection_window = 65535
        sent, seen = 0, []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            blocked = sent < len(body) and min(stream_window, connection_window) <= 0
            for frame in conn.frames(0.2 if blocked or sent >= len(body) else 0):
                if frame.type == SETTINGS and not frame.flags & ACK:
                    conn.send(_frame(SETTINGS, ACK, 0))
                elif frame.type == PING and not frame.flags & ACK:
                    conn.send(_frame(PING, ACK, 0, frame.payload))
                elif frame.type == WINDOW_UPDATE:
                    increment = int.from_bytes(frame.payload[:4], "big") & 0x7FFFFFFF
                    if frame.stream == 0:
                        connection_window += increment
                    else:
                        stream_window += increment
                elif frame.stream == 1 or frame.type == GOAWAY:
                    seen.append(frame)
            if any(f.type in (RST_STREAM, GOAWAY) or f.flags & END_STREAM for f in seen):
                # The stream is over on the server's side; whatever follows at once belongs to it.
                seen.extend(f for f in conn.frames(0.5) if f.stream == 1 or f.type == GOAWAY)
                return seen
            size = min(MAX_FRAME, len(body) - sent, stream_window, connection_window)
            if size > 0:
                last = sent + size == len(body)
                conn.send(_frame(DATA, END_STREAM if last else 0, 1, body[sent : sent + size]))
                sent += size
                stream_window -= size
                connection_window -= size
        return seen
    finally:
        conn.sock.close()


STATUS_INDEXES = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}  # HPACK static table


def status_of(frame: Frame) -> int | None:
    """The :status of a response HEADERS frame when it is the block's first field and either a
    static-table entry or a raw literal (which is how Envoy sends the statuses tests look at)."""
    first = frame.payload[0] if frame.payload else 0
    if first & 0x80:
        return STATUS_INDEXES.get(first & 0x7F)
    index = first & 0x3F if first & 0x40 else first & 0x0F
    length = frame.payload[1] if len(frame.payload) > 1 else 0
    if index == 8 and not length & 0x80:
        return int(frame.payload[2 : 2 + length])
    return None


def rst_error_code(frame: Frame) -> int:
    return int.from_bytes(frame.payload[:4], "big")
