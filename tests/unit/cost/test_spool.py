"""The spool: formats known from the first bytes, gzip inflated as it arrives, long lines and
truncated streams refused as soon as they are found out."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from services.cost.spool import Format, Spool
from services.runtime.errors import InvalidArgument, ResourceExhausted


def _spool(tmp_path: Path, **limits: int) -> Spool:
    return Spool(
        tmp_path / "upload", max_bytes=limits.get("max_bytes", 1 << 20), max_line_bytes=limits.get("line", 64)
    )


def _feed(spool: Spool, data: bytes, chunk: int) -> None:
    for start in range(0, len(data), chunk):
        spool.write(data[start : start + chunk])
    spool.finish()


def test_a_csv_is_stored_as_it_came_with_its_header(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    _feed(spool, b'"a","b"\r\n1,2\n', 3)
    assert (spool.format, spool.header, spool.path.read_bytes()) == (
        Format.CSV,
        b'"a","b"',
        b'"a","b"\r\n1,2\n',
    )


def test_concatenated_gzip_members_inflate_into_one_file(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    _feed(spool, gzip.compress(b"a,b\n1,2\n") + gzip.compress(b"3,4\n"), 5)
    assert (spool.format, spool.path.read_bytes()) == (Format.CSV_GZIP, b"a,b\n1,2\n3,4\n")


def test_a_truncated_gzip_is_refused_when_the_upload_ends(tmp_path: Path) -> None:
    packed = gzip.compress(b"a,b\n" + b"1,2\n" * 100)
    with pytest.raises(InvalidArgument, match="truncated"):
        _feed(_spool(tmp_path), packed[:-8], 7)


def test_a_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(b"a,b\n" + b"1,2\n" * 100))
    packed[12:20] = b"\xff" * 8
    with pytest.raises(InvalidArgument, match="corrupt"):
        _feed(_spool(tmp_path), bytes(packed), 7)


@pytest.mark.parametrize("chunk", [1, 10, 1000])
def test_a_line_over_the_limit_is_refused_however_it_is_chunked(tmp_path: Path, chunk: int) -> None:
    with pytest.raises(InvalidArgument, match="longer than 64"):
        _feed(_spool(tmp_path), b"a,b\n1,2\n" + b"x" * 65 + b"\n3,4\n", chunk)


def test_lines_at_the_limit_pass(tmp_path: Path) -> None:
    _feed(_spool(tmp_path), b"a,b\n" + (b"x" * 64 + b"\n") * 3, 50)


def test_a_file_over_the_size_limit_is_resource_exhausted(tmp_path: Path) -> None:
    with pytest.raises(ResourceExhausted):
        _feed(_spool(tmp_path, max_bytes=100), b"a,b\n" + b"1,2\n" * 50, 16)


def test_a_declared_format_that_the_bytes_contradict_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "u", max_bytes=1000, max_line_bytes=100, declared=Format.PARQUET)
    with pytest.raises(InvalidArgument, match="declared PARQUET"):
        _feed(spool, b"a,b\n1,2\n", 100)


def test_nothing_sent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no file"):
        _spool(tmp_path).finish()


def _segmented(tmp_path: Path, data: bytes, segment_bytes: int, chunk: int) -> Spool:
    spool = Spool(tmp_path / "upload", max_bytes=1 << 20, max_line_bytes=1000, segment_bytes=segment_bytes)
    _feed(spool, data, chunk)
    return spool


@pytest.mark.parametrize("chunk", [7, 100, 4096])
def test_segments_are_whole_records_after_the_header_and_together_the_upload(
    tmp_path: Path, chunk: int
) -> None:
    header = b'"id","note"'
    # Every record starts with @; every third has a quoted note over two lines.
    rows = [
        b'@%d,"a ""quoted"" note\nover two lines"' % i if i % 3 == 0 else b"@%d,plain" % i for i in range(200)
    ]
    data = b"\n".join([header, *rows]) + b"\n"
    spool = _segmented(tmp_path, data, 300, chunk)
    segments = spool.take_segments()
    assert len(segments) > 5 and [s.index for s in segments] == list(range(len(segments)))
    bodies = []
    for segment in segments:
        text = segment.path.read_bytes()
        assert text.startswith(header + b"\n") and text.endswith(b"\n")
        body = text[len(header) + 1 :]
        assert body.count(b'"') % 2 == 0 and body.startswith(b"@")  # never cut inside a record
        bodies.append(body)
    assert header + b"\n" + b"".join(bodies) == data


def test_a_gzip_upload_is_segmented_after_inflating(tmp_path: Path) -> None:
    data = b"a,b\n" + b"".join(b"%d,x\n" % i for i in range(500))
    spool = _segmented(tmp_path, gzip.compress(data), 512, 64)
    segments = spool.take_segments()
    assert len(segments) > 3 and spool.format == Format.CSV_GZIP
    assert b"a,b\n" + b"".join(s.path.read_bytes()[4:] for s in segments) == data


def test_an_upload_that_ends_on_a_cut_has_no_empty_last_segment_and_remove_deletes_every_file(
    tmp_path: Path,
) -> None:
    data = b"a,b\n" + b"1,2\n" * 8  # the header and 8 rows: 36 bytes, cut at 12 and 24 and 36
    spool = _segmented(tmp_path, data, 12, 36)
    segments = spool.take_segments()
    assert all(s.path.read_bytes().count(b"\n") > 1 for s in segments)
    assert sum(s.path.read_bytes().count(b"\n") - 1 for s in segments) == 8
    spool.remove()
    assert not list(tmp_path.iterdir())
