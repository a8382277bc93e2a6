"""Where an uploaded export lands while it arrives: a file on disk, never the whole of it in
memory, decompressed as it comes when it is gzip'd.

The format is known from the first bytes (gzip's magic, Parquet's `PAR1`, else CSV). A CSV is
checked as it arrives for a physical line over the limit, so that a file of one 2 GB line is
refused after the limit, not after 2 GB; a gzip stream that ends early (a truncated download)
or does not inflate is refused when it is found out. Nothing else has happened by then.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import BinaryIO

from services.runtime.errors import InvalidArgument, ResourceExhausted

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


class Format:
    """The formats an export may come in (the contract's DataFormat, by name)."""

    CSV = "CSV"
    CSV_GZIP = "CSV_GZIP"
    PARQUET = "PARQUET"


def detect(first_bytes: bytes) -> str:
    """The format of a file that starts with `first_bytes`."""
    if first_bytes.startswith(GZIP_MAGIC):
        return Format.CSV_GZIP
    if first_bytes.startswith(PARQUET_MAGIC):
        return Format.PARQUET
    return Format.CSV


class Spool:
    """One upload's file. `write` each chunk as it arrives, then `finish`; then `path` holds
    the CSV (decompressed) or the Parquet file, and `header` the CSV's first line."""

    def __init__(self, path: Path, *, max_bytes: int, max_line_bytes: int, declared: str = "") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.declared = declared  # the format the caller named, if any
        self.format = ""
        self.bytes_received = 0
        self.bytes_stored = 0
        self.header = b""
        self._file: BinaryIO | None = None
        self._inflater: zlib._Decompress | None = None
        self._line = 0  # bytes since the last newline
        self._head = b""  # the first line, while it arrives
        self._header_done = False
        self._pending = b""  # the first bytes, until the format is known

    def write(self, chunk: bytes) -> None:
        """Add the next bytes of the upload."""
        if not chunk:
            return
        self.bytes_received += len(chunk)
        if not self.format:
            self._pending += chunk
            if len(self._pending) < len(PARQUET_MAGIC):
                return
            self._start(self._pending)
            chunk, self._pending = self._pending, b""
        if self._inflater is not None:
            try:
                while chunk:
                    self._store(self._inflater.decompress(chunk, 1 << 20))
                    chunk = self._inflater.unconsumed_tail
                    if self._inflater.eof and self._inflater.unused_data:
                        # Concatenated gzip members (what `cat a.gz b.gz` and some exporters
                        # make) form one stream.
                        rest = self._inflater.unused_data
                        self._inflater = zlib.decompressobj(wbits=31)
                        chunk = rest + chunk
            except zlib.error as exc:
                raise InvalidArgument.for_field(
                    "body",
                    f"the gzip stream is corrupt after {self.bytes_received} bytes ({exc})",
                    reason="CORRUPT_GZIP",
                ) from None
        else:
            self._store(chunk)

    def _start(self, first: bytes) -> None:
        self.format = detect(first)
        if self.declared and self.declared != self.format:
            raise InvalidArgument.for_field(
                "format",
                f"the file was declared {self.declared} but its first bytes are those of {self.format}",
                reason="FORMAT_MISMATCH",
            )
        if self.format == Format.CSV_GZIP:
            self._inflater = zlib.decompressobj(wbits=31)
        self._file = self.path.open("wb")

    def _store(self, data: bytes) -> None:
        if not data:
            return
        assert self._file is not None
        self.bytes_stored += len(data)
        if self.bytes_stored > self.max_bytes:
            raise ResourceExhausted(
                f"the file is over the import limit of {self.max_bytes} bytes (decompressed); split "
                "it by billing period",
                reason="IMPORT_TOO_LARGE",
            )
        if self.format != Format.PARQUET:
            self._check_lines(data)
        self._file.write(data)

    def _check_lines(self, data: bytes) -> None:
        if not self._header_done:
            end = data.find(b"\n")
            self._head += data if end < 0 else data[:end]
            if end >= 0:
                self.header, self._head, self._header_done = self._head.rstrip(b"\r"), b"", True
        last = data.rfind(b"\n")
        longest = 0
        if last < 0:
            self._line += len(data)
        else:
            # The longest line inside this chunk (between its newlines) is checked in C: only
            # a chunk whose newlines are further apart than the limit needs a closer look.
            first = data.find(b"\n")
            longest = max(self._line + first, len(data) - last - 1)
            if last - first > self.max_line_bytes:
                longest = max(longest, _longest_line(data, first, last))
            self._line = len(data) - last - 1
        if max(longest, self._line) > self.max_line_bytes:
            self._too_long()

    def _too_long(self) -> None:
        raise InvalidArgument.for_field(
            "body",
            f"a line is longer than {self.max_line_bytes} bytes (DEVMESH_COST_MAX_LINE_BYTES): "
            "not a FOCUS export, or a broken one",
            reason="LINE_TOO_LONG",
        )

    def finish(self) -> None:
        """The upload is complete: refuse it when it is empty or its gzip stream ends early."""
        if not self.format and self._pending:
            self._start(self._pending)
            self._store(self._pending)
            self._pending = b""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.bytes_received == 0:
            raise InvalidArgument.for_field("body", "no file was sent", reason="EMPTY_FILE")
        if self._inflater is not None and not self._inflater.eof:
            raise InvalidArgument.for_field(
                "body",
                f"the gzip stream ends before its end after {self.bytes_received} bytes: the file "
                "is truncated",
                reason="TRUNCATED_GZIP",
            )
        if self.format != Format.PARQUET and not self._header_done:
            if not self._head.strip():
                raise InvalidArgument.for_field("body", "the file is empty", reason="EMPTY_FILE")
            self.header = self._head.rstrip(b"\r")  # a header and no rows

    def close(self) -> None:
        """Release the file handle (after a failure); the file itself is the caller's."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _longest_line(data: bytes, first: int, last: int) -> int:
    longest, start = 0, first + 1
    while start <= last:
        end = data.find(b"\n", start, last + 1)
        longest = max(longest, end - start)
        start = end + 1
    return longest
