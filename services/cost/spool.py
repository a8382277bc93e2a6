"""Where an uploaded export lands while it arrives: a file on disk, never the whole of it in
memory, decompressed as it comes when it is gzip'd.

The format is known from the first bytes (gzip's magic, Parquet's `PAR1`, else CSV). A CSV is
checked as it arrives for a physical line over the limit, so that a file of one 2 GB line is
refused after the limit, not after 2 GB; a gzip stream that ends early (a truncated download)
or does not inflate is refused when it is found out. Nothing else has happened by then.

A CSV is spooled in segments of about `segment_bytes`, each a file of whole records that starts
with the header line, so that DuckDB can stage one segment while the next still arrives. A
segment ends at the first newline past its size that is outside a quoted field (an even number
of quotes since the segment began: a field's own quotes come in pairs), never inside a record.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Segment:
    """One file of the upload that is read on its own: the Parquet file, or whole records of a
    CSV after its header line."""

    index: int
    path: Path


class Spool:
    """One upload's files. `write` each chunk as it arrives, then `finish`; `take_segments`
    hands over the segments completed so far (the last one once `finish` has run). `path` is
    the first segment's file, `header` the CSV's first line."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_line_bytes: int,
        declared: str = "",
        segment_bytes: int = 0,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.declared = declared  # the format the caller named, if any
        self.segment_bytes = segment_bytes  # 0: the whole upload is one segment
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
        self._paths = [path]  # every segment's file, the open one last
        self._done: list[Segment] = []  # completed, not yet taken
        self._segment_bytes = 0  # bytes of records in the open segment
        self._quotes_odd = False  # whether the open segment is inside a quoted field
        self._newline = b"\n"  # how the header line ends

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
        if self.format == Format.PARQUET:
            self._file.write(data)
            return
        self._check_lines(data)
        while self.segment_bytes and self._header_done:
            cut = self._record_end(data, self.segment_bytes - self._segment_bytes)
            if cut is None:
                break
            self._append(data[:cut])
            self._next_segment()
            data = data[cut:]
        self._append(data)

    def _append(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._segment_bytes += len(data)
        self._quotes_odd ^= bool(data.count(b'"') & 1)

    def _record_end(self, data: bytes, start: int) -> int | None:
        """Where in `data` the open segment can end: just past the first newline at or after
        `start` that is outside a quoted field; None when there is none."""
        odd, counted = self._quotes_odd, 0
        newline = data.find(b"\n", max(0, start - 1))
        while newline >= 0:
            odd ^= bool(data.count(b'"', counted, newline) & 1)
            counted = newline
            if not odd:
                return newline + 1
            newline = data.find(b"\n", newline + 1)
        return None

    def _next_segment(self) -> None:
        self._complete()
        path = self.path.with_name(f"{self.path.name}.{len(self._paths)}")
        self._paths.append(path)
        self._file = path.open("wb")
        self._file.write(self.header + self._newline)
        self._segment_bytes = 0
        self._quotes_odd = False

    def _complete(self) -> None:
        """The open segment is whole: close its file and hand it over."""
        assert self._file is not None
        self._file.close()
        self._file = None
        index = len(self._paths) - 1
        self._done.append(Segment(index, self._paths[index]))

    def take_segments(self) -> list[Segment]:
        """The segments completed since the last call, in order."""
        taken, self._done = self._done, []
        return taken

    def _check_lines(self, data: bytes) -> None:
        if not self._header_done:
            end = data.find(b"\n")
            self._head += data if end < 0 else data[:end]
            if end >= 0:
                # A later segment's header ends as this one does: DuckDB reads a file with
                # one line ending, and a header's \n before records' \r\n splits them wrong.
                self._newline = b"\r\n" if self._head.endswith(b"\r") else b"\n"
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
        if self._file is not None:
            if len(self._paths) > 1 and not self._segment_bytes:
                # A segment of nothing after the header: the last cut fell at the very end.
                self._file.close()
                self._file = None
                self._paths[-1].unlink()
                self._paths.pop()
            else:
                self._complete()

    def remove(self) -> None:
        """Close and delete every file of the upload."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self._paths:
            path.unlink(missing_ok=True)


def _longest_line(data: bytes, first: int, last: int) -> int:
    longest, start = 0, first + 1
    while start <= last:
        end = data.find(b"\n", start, last + 1)
        longest = max(longest, end - start)
        start = end + 1
    return longest
