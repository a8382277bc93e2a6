"""Reading a spooled FOCUS export into Parquet partitions, in DuckDB, in one pass.

Every column is read as text and converted by SQL (vectorised, in parallel), never row by
row in Python: money and quantities become DECIMAL, times TIMESTAMPTZ in UTC, Tags a map. Each
row gets its rejection (the first check it fails, with the column and the value) or its list
of warnings. One COPY per segment of the upload (see spool.py; staged while the next segment
still arrives) writes its rows to one staged Parquet file; the counts, totals and samples are
read back from them (one or two columns each); a staged file of one billing period without
rejected rows is then moved into place as it is (the common case: exports run in time order),
any other is copied out period by period (the rejected rows stay behind). The daily rollups
are written from the stored rows.

Rows that the CSV reader itself cannot split (a field too many, an unclosed quote) are kept
by DuckDB's reject tables and counted with the others: rows_read = rows_stored + rows_rejected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from services.cost import focus_schema
from services.cost.duck import DuckSettings, connect, identifier, literal
from services.cost.focus_schema import DECIMAL_SCALE, Header, Kind
from services.cost.spool import Format, Segment
from services.runtime.errors import InvalidArgument, ResourceExhausted, Unavailable

REJECTION_COLUMN = "x_rejection"  # why a row was rejected (NULL in every stored row)
ROW_GROUP_ROWS = 50_000  # the Parquet writer buffers a row group per thread: bounded memory
MAX_SAMPLES = 20
MAX_SAMPLE_VALUE = 200
PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
DECIMAL_TYPE = f"DECIMAL(38,{DECIMAL_SCALE})"


@dataclass(frozen=True)
class Issue:
    """One row with a problem."""

    line: int
    column: str
    value: str
    reason: str


@dataclass
class StagedSegment:
    """A segment of the upload, typed and checked into one Parquet file. Lines are numbered
    as DuckDB numbers them in a whole file, by record (the header is line 1): record `n` of
    this segment is line `n + 1 + records_before` of the upload."""

    segment: Segment
    file: Path
    records_before: int
    records: int = 0  # rows staged and lines the CSV reader could not split
    csv_rejects: list[Issue] = field(default_factory=list)  # those lines


@dataclass
class IngestResult:
    """What one export held, once staged."""

    focus_version: str
    unknown_columns: list[str]
    rows_read: int = 0
    rows_stored: int = 0
    rows_rejected: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    rejected_samples: list[Issue] = field(default_factory=list)
    warnings: dict[str, int] = field(default_factory=dict)
    warning_samples: list[Issue] = field(default_factory=list)
    # billing period -> rows stored in it
    periods: dict[str, int] = field(default_factory=dict)
    effective_cost: dict[str, Decimal] = field(default_factory=dict)  # currency -> total


RAW, TYPED = "_devmesh_raw_", "_devmesh_typed_"  # prefixes of the stages' own columns


# Read by try_cast, which skips the blanks around a value itself: their text is not trimmed.
_CAST = (Kind.DECIMAL, Kind.TIME)


def _raw(header: Header, column: str) -> str:
    """The column's text as the first stage names it (NULL when absent or empty; blank only
    for a column of _CAST, see `_missing`)."""
    return identifier(RAW + column) if column in header.focus else "NULL::VARCHAR"


def _text(header: Header, column: str) -> str:
    """The first stage's text of a column: trimmed, blank as NULL. Only a value that starts or
    ends with a space is trimmed (trimming every value, a copy each, was a fifth of the
    import), and the columns of _CAST not at all."""
    value = f"src.{identifier(header.focus[column])}"
    if focus_schema.KINDS[column] in _CAST:
        return value
    return f"CASE WHEN starts_with({value}, ' ') OR ends_with({value}, ' ') THEN nullif(trim({value}), '') ELSE {value} END"


def _missing(header: Header, typed: dict[str, str], column: str) -> str:
    """SQL true when the row has no value for `column` (absent, empty or blank)."""
    raw = _raw(header, column)
    if focus_schema.KINDS[column] in _CAST:
        return f"({typed[column]} IS NULL AND ({raw} IS NULL OR trim({raw}) = ''))"
    return f"{raw} IS NULL"


def _stages(header: Header, source: str) -> tuple[str, dict[str, str]]:
    """The relation of every row with its text and stored values, and the names of the stored
    values. Each value is computed once, in its own stage: text, then types, then checks."""
    texts = [f"{_text(header, c)} AS {identifier(RAW + c)}" for c in header.focus]
    texts += [f"src.{identifier(name)} AS {identifier(name)}" for name in header.unknown]
    values = [f"{expression} AS {identifier(TYPED + name)}" for name, expression in _typed(header).items()]
    relation = f"(SELECT *, {', '.join(values)} FROM (SELECT {', '.join(texts)} FROM {source}))"
    return relation, {name: identifier(TYPED + name) for name, _, _ in focus_schema.COLUMNS}


def _allowed(raw: str, values: Sequence[str]) -> str:
    """Allowed values matched without case, stored as the specification spells them."""
    cases = " ".join(f"WHEN {literal(v.lower())} THEN {literal(v)}" for v in values)
    return f"CASE lower({raw}) {cases} ELSE {raw} END"


_KEY_VALUE = r"^\s*[^=,;{}]+=[^,;]*(\s*[,;]\s*[^=,;]+=[^,;]*)*\s*$"


def _tags(raw: str) -> str:
    """A JSON object, or `k=v` pairs separated by `,` or `;`, as a map; NULL when neither."""
    pairs = (
        f"map_from_entries(list_transform(regexp_split_to_array(trim({raw}), '\\s*[,;]\\s*'), "
        "lambda kv: struct_pack(key := trim(split_part(kv, '=', 1)), value := trim(substr(kv, strpos(kv, '=') + 1)))))"
    )
    return (
        f"CASE WHEN {raw} IS NULL THEN NULL "
        f"WHEN starts_with({raw}, '{{') THEN try(json_transform({raw}, '\"MAP(VARCHAR, VARCHAR)\"')) "
        f"WHEN regexp_matches({raw}, {literal(_KEY_VALUE)}) THEN try({pairs}) END"
    )


def _typed(header: Header) -> dict[str, str]:
    """Each FOCUS column's stored value, as SQL over the text columns of `src`."""
    typed: dict[str, str] = {}
    for name, kind, _ in focus_schema.COLUMNS:
        raw = _raw(header, name)
        if kind is Kind.DECIMAL:
            typed[name] = f"try_cast({raw} AS {DECIMAL_TYPE})"
        elif kind is Kind.TIME:
            typed[name] = f"try_cast({raw} AS TIMESTAMPTZ)"
        elif kind is Kind.TAGS:
            typed[name] = _tags(raw)
        elif name == "ChargeCategory":
            typed[name] = _allowed(raw, focus_schema.CHARGE_CATEGORIES)
        elif name == "ChargeFrequency":
            typed[name] = _allowed(raw, focus_schema.CHARGE_FREQUENCIES)
        elif name == "ChargeClass":
            typed[name] = _allowed(raw, focus_schema.CHARGE_CLASSES)
        elif name == "BillingCurrency":
            typed[name] = f"upper({raw})"
        else:
            typed[name] = raw
    return typed


def _issue(reason: str, column: str, raw: str) -> str:
    # trim: the text of a column of _CAST is not trimmed (only the rows with an issue get here)
    return f'struct_pack(reason := {literal(reason)}, "column" := {literal(column)}, value := left(trim({raw}), {MAX_SAMPLE_VALUE}))'


def _rejection(header: Header, typed: dict[str, str], periods: Sequence[str]) -> str:
    """The first check a row fails, as a struct (reason, column, value); NULL for a good row."""
    checks: list[tuple[str, str]] = []
    for column in focus_schema.REQUIRED:
        checks.append((_missing(header, typed, column), _issue("VALUE_MISSING", column, "NULL")))
    for name, kind, _ in focus_schema.COLUMNS:
        if name not in header.focus or kind not in (Kind.TIME, Kind.DECIMAL):
            continue
        raw = _raw(header, name)
        reason = "TIMESTAMP_INVALID" if kind is Kind.TIME else "DECIMAL_INVALID"
        checks.append(
            (f"{typed[name]} IS NULL AND {raw} IS NOT NULL AND trim({raw}) <> ''", _issue(reason, name, raw))
        )
    categories = ", ".join(literal(c) for c in focus_schema.CHARGE_CATEGORIES)
    checks.append(
        (
            f"{typed['ChargeCategory']} NOT IN ({categories})",
            _issue("CHARGE_CATEGORY_UNKNOWN", "ChargeCategory", _raw(header, "ChargeCategory")),
        )
    )
    checks.append(
        (
            f"NOT regexp_full_match({typed['BillingCurrency']}, '[A-Z]{{3}}')",
            _issue("CURRENCY_INVALID", "BillingCurrency", _raw(header, "BillingCurrency")),
        )
    )
    for prefix, reason in (
        ("Charge", "CHARGE_PERIOD_END_BEFORE_START"),
        ("Billing", "BILLING_PERIOD_END_BEFORE_START"),
    ):
        end, start = typed[f"{prefix}PeriodEnd"], typed[f"{prefix}PeriodStart"]
        checks.append(
            (f"{end} < {start}", _issue(reason, f"{prefix}PeriodEnd", _raw(header, f"{prefix}PeriodEnd")))
        )
    if periods:
        declared = ", ".join(literal(p) for p in periods)
        checks.append(
            (
                f"strftime({typed['BillingPeriodStart']}, '%Y-%m') NOT IN ({declared})",
                _issue(
                    "BILLING_PERIOD_NOT_DECLARED", "BillingPeriodStart", _raw(header, "BillingPeriodStart")
                ),
            )
        )
    cases = " ".join(f"WHEN {condition} THEN {issue}" for condition, issue in checks)
    return f"CASE {cases} END"


def _warnings(header: Header, typed: dict[str, str]) -> str:
    """A row's warnings (a list of structs), NULL when it has none."""
    checks: list[tuple[str, str]] = []
    for column in focus_schema.MANDATORY_NOT_NULL:
        checks.append((_missing(header, typed, column), _issue("MANDATORY_VALUE_MISSING", column, "NULL")))
    for column in ("ChargeCategory", "ChargeFrequency", "ChargeClass", "BillingCurrency"):
        raw = _raw(header, column)
        checks.append((f"{raw} IS DISTINCT FROM {typed[column]}", _issue("VALUE_NORMALIZED", column, raw)))
    frequencies = ", ".join(literal(f) for f in focus_schema.CHARGE_FREQUENCIES)
    raw = _raw(header, "ChargeFrequency")
    checks.append(
        (
            f"{typed['ChargeFrequency']} NOT IN ({frequencies})",
            _issue("CHARGE_FREQUENCY_UNKNOWN", "ChargeFrequency", raw),
        )
    )
    for column in ("Tags", "AllocatedTags"):
        raw = _raw(header, column)
        checks.append(
            (f"{raw} IS NOT NULL AND {typed[column]} IS NULL", _issue("TAGS_UNPARSEABLE", column, raw))
        )
    items = ", ".join(f"CASE WHEN {condition} THEN {issue} END" for condition, issue in checks)
    # The list is built only for the rows with a warning (few): building it for every row and
    # dropping it when empty took a tenth of the import.
    any_warning = " OR ".join(f"({condition})" for condition, _ in checks)
    return f"CASE WHEN {any_warning} THEN list_filter([{items}], lambda w: w IS NOT NULL) END"


def _extensions(header: Header, typed: dict[str, str]) -> str:
    """Columns FOCUS does not define, and tags that could not be read, as one map."""
    values = [(name, identifier(name)) for name in header.unknown]
    for column in ("Tags", "AllocatedTags"):
        if column in header.focus:
            values.append(
                ("x_Unparsed" + column, f"CASE WHEN {typed[column]} IS NULL THEN {_raw(header, column)} END")
            )
    if not values:
        return "NULL::MAP(VARCHAR, VARCHAR)"
    entries = ", ".join(f"struct_pack(key := {literal(key)}, value := {value})" for key, value in values)
    listed = f"list_filter([{entries}], lambda e: e.value IS NOT NULL)"
    # As with the warnings: the map is built only for the rows that have an entry.
    any_value = " OR ".join(f"({value}) IS NOT NULL" for _, value in values)
    return f"CASE WHEN {any_value} THEN map_from_entries({listed}) END"


class Ingest:
    """Stages one spooled export as Parquet partitions under `staging`."""

    def __init__(self, duck: DuckSettings, max_line_bytes: int) -> None:
        self._duck = duck
        self._max_line_bytes = max_line_bytes

    def header_of(self, path: Path, fmt: str, first_line: bytes) -> Header:
        """The export's columns mapped onto FOCUS (INVALID_ARGUMENT when it is not FOCUS)."""
        if fmt == Format.PARQUET:
            with connect(self._duck) as db:
                try:
                    names = [
                        row[0]
                        for row in db.execute(
                            f"DESCRIBE SELECT * FROM read_parquet({literal(str(path))})"
                        ).fetchall()
                    ]
                except duckdb.Error as exc:
                    raise InvalidArgument.for_field(
                        "body", f"not a readable Parquet file: {str(exc)[:200]}", reason="CORRUPT_PARQUET"
                    ) from None
            return focus_schema.read_header(names)
        return focus_schema.read_header(focus_schema.csv_header(first_line))

    def _source(self, db: duckdb.DuckDBPyConnection, path: Path, fmt: str, header: Header) -> str:
        """A relation `src` with every column of the export as text."""
        names = list(header.names)
        if fmt == Format.PARQUET:
            types = dict(
                db.execute(
                    f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({literal(str(path))}))"
                ).fetchall()
            )
            selected = []
            for name in names:
                kind = str(types.get(name, "VARCHAR"))
                if kind.startswith(("MAP", "STRUCT")) or kind.endswith("]"):
                    selected.append(f"to_json({identifier(name)})::VARCHAR AS {identifier(name)}")
                else:
                    selected.append(f"CAST({identifier(name)} AS VARCHAR) AS {identifier(name)}")
            return f"(SELECT {', '.join(selected)} FROM read_parquet({literal(str(path))})) AS src"
        columns = "{" + ", ".join(f"{literal(n)}: 'VARCHAR'" for n in names) + "}"
        options = (
            f"header = true, auto_detect = false, columns = {columns}, delim = ',', quote = '\"', "
            f"escape = '\"', nullstr = ['NULL', 'null', ''], store_rejects = true, "
            f"max_line_size = {self._max_line_bytes + 2}, strict_mode = true"
        )
        return f"read_csv({literal(str(path))}, {options}) AS src"

    def stage_segment(
        self,
        segment: Segment,
        records_before: int,
        fmt: str,
        header: Header,
        periods: Sequence[str],
        out_dir: Path,
    ) -> StagedSegment:
        """Type and check one segment's rows into one staged Parquet file under `out_dir`
        (`records_before`: the records of the segments before it)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        staged = StagedSegment(segment, out_dir / f"staged_{segment.index}.parquet", records_before)
        with connect(self._duck) as db:
            source, typed = _stages(header, self._source(db, segment.path, fmt, header))
            columns = [f"{typed[name]} AS {identifier(name)}" for name, _, _ in focus_schema.COLUMNS]
            columns += [
                f"{_extensions(header, typed)} AS {focus_schema.EXTENSIONS_COLUMN}",
                f"{_warnings(header, typed)} AS {focus_schema.WARNINGS_COLUMN}",
                f"{_rejection(header, typed, periods)} AS {REJECTION_COLUMN}",
            ]
            # One file, not a partitioned COPY: DuckDB's partitioned writer buffers every
            # partition's rows and, under the memory limit, spilled them; it took some 60% of
            # the import. The file is split by period afterwards only when it has to be.
            self._write(db, f"SELECT {', '.join(columns)} FROM {source}", staged.file)
            if fmt != Format.PARQUET:
                staged.csv_rejects = self._csv_rejects(db, records_before)
            (rows,) = db.execute(
                f"SELECT count(*) FROM read_parquet({literal(str(staged.file))})"
            ).fetchone() or (0,)
            staged.records = int(rows) + len(staged.csv_rejects)
        return staged

    def finish(
        self,
        staged: Sequence[StagedSegment],
        fmt: str,
        header: Header,
        periods: Sequence[str],
        out_dir: Path,
    ) -> IngestResult:
        """Count the staged segments' rows, and place them under `out_dir/billing_period=<p>/`."""
        result = IngestResult(focus_version=header.version, unknown_columns=list(header.unknown))
        with connect(self._duck) as db:
            per_file = self._count(db, [s.file for s in staged], result)
            for segment in staged:
                self._split(db, segment, per_file.get(str(segment.file), set()), out_dir)
            self._add_csv_rejects([r for s in staged for r in s.csv_rejects], result)
            if result.rejected_samples or result.warning_samples:
                self._number_samples(db, staged, fmt, header, periods, result)
        return result

    def _write(self, db: duckdb.DuckDBPyConnection, query: str, out: Path) -> None:
        """COPY `query` to the Parquet file `out`, failures as the contract's errors."""
        try:
            db.execute(
                f"COPY ({query}) TO {literal(str(out))} (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
            )
        except duckdb.OutOfMemoryException:
            raise ResourceExhausted(
                "the import needs more memory than DEVMESH_COST_DUCKDB_MEMORY_MB allows (and spilling "
                "to disk could not make up for it); nothing was imported",
                reason="IMPORT_OUT_OF_MEMORY",
                retry_after=10,
            ) from None
        except duckdb.IOException as exc:
            raise Unavailable(
                f"the import could not write its files ({_first_line(exc)}); nothing was imported",
                reason="STORAGE_UNAVAILABLE",
                retry_after=10,
            ) from None
        except duckdb.Error as exc:
            raise InvalidArgument.for_field(
                "body", f"the file cannot be read: {_first_line(exc)}", reason="UNREADABLE_FILE"
            ) from None

    def _count(
        self, db: duckdb.DuckDBPyConnection, files: Sequence[Path], result: IngestResult
    ) -> dict[str, set[str | None]]:
        """Rows per period and per rejection, totals, warnings and samples: a few columns of
        the staged files, read back. Returns each file's periods (None: rejected rows)."""
        rows = f"read_parquet([{', '.join(literal(str(f)) for f in files)}], filename = true)"
        rejection = REJECTION_COLUMN
        per_file: dict[str, set[str | None]] = {}
        for file, period, reason, currency, count, total in db.execute(
            f"SELECT filename, CASE WHEN {rejection} IS NULL THEN strftime(BillingPeriodStart, '%Y-%m') END, "
            f"{rejection}.reason, CASE WHEN {rejection} IS NULL THEN BillingCurrency END, count(*), "
            f"sum(EffectiveCost) FILTER (WHERE {rejection} IS NULL) FROM {rows} GROUP BY ALL ORDER BY ALL"
        ).fetchall():
            per_file.setdefault(file, set()).add(period)
            if reason is not None:
                result.rejections[reason] = result.rejections.get(reason, 0) + int(count)
                result.rows_rejected += int(count)
                continue
            result.periods[period] = result.periods.get(period, 0) + int(count)
            result.rows_stored += int(count)
            result.effective_cost[currency] = result.effective_cost.get(currency, Decimal(0)) + Decimal(
                total or 0
            )
        if result.rows_rejected:
            samples = db.execute(
                f'SELECT {rejection}."column", {rejection}.value, {rejection}.reason FROM {rows} '
                f"WHERE {rejection} IS NOT NULL LIMIT {MAX_SAMPLES}"
            ).fetchall()
            result.rejected_samples += [Issue(0, c or "", v or "", r) for c, v, r in samples]
        warned = (
            f"(SELECT unnest({focus_schema.WARNINGS_COLUMN}) AS w FROM {rows} "
            f"WHERE {focus_schema.WARNINGS_COLUMN} IS NOT NULL AND {rejection} IS NULL)"
        )
        for reason, count in db.execute(f"SELECT w.reason, count(*) FROM {warned} GROUP BY ALL").fetchall():
            result.warnings[reason] = result.warnings.get(reason, 0) + int(count)
        if result.warnings:
            samples = db.execute(
                f'SELECT w."column", w.value, w.reason FROM {warned} LIMIT {MAX_SAMPLES}'
            ).fetchall()
            result.warning_samples += [Issue(0, c or "", v or "", r) for c, v, r in samples]
        result.rows_read = result.rows_stored + result.rows_rejected
        return per_file

    def _split(
        self, db: duckdb.DuckDBPyConnection, staged: StagedSegment, periods: set[str | None], out_dir: Path
    ) -> None:
        """A staged file into the directories of its billing periods: moved as it is when it
        holds one period and no rejected row (the common segment), else each period copied out."""
        name = f"data_{staged.segment.index}.parquet"
        if len(periods) == 1 and None not in periods:
            (period,) = periods
            directory = out_dir / f"billing_period={period}"
            directory.mkdir(parents=True, exist_ok=True)
            os.rename(staged.file, directory / name)
            return
        rows = f"read_parquet({literal(str(staged.file))})"
        for period in sorted(p for p in periods if p is not None):
            directory = out_dir / f"billing_period={period}"
            directory.mkdir(parents=True, exist_ok=True)
            # A range of BillingPeriodStart (not its strftime), so that row groups of other
            # periods are skipped by their statistics.
            start = f"TIMESTAMPTZ {literal(period + '-01 00:00:00+00')}"
            self._write(
                db,
                f"SELECT * FROM {rows} WHERE {REJECTION_COLUMN} IS NULL AND BillingPeriodStart >= {start} "
                f"AND BillingPeriodStart < {start} + INTERVAL 1 MONTH",
                directory / name,
            )
        staged.file.unlink()

    def _csv_rejects(self, db: duckdb.DuckDBPyConnection, records_before: int) -> list[Issue]:
        """Lines the CSV reader could not split into the header's columns, numbered in the
        upload (`records_before` came before this segment)."""
        try:
            rows = db.execute(
                "SELECT line, any_value(error_type), any_value(column_name), any_value(csv_line) "
                "FROM reject_errors GROUP BY line ORDER BY line"
            ).fetchall()
        except duckdb.CatalogException:
            return []  # no reject table: nothing was rejected
        return [
            Issue(
                int(line) + records_before,
                column or "",
                (text or "")[:MAX_SAMPLE_VALUE],
                "CSV_" + re.sub(r"[^A-Z0-9]+", "_", str(error_type).upper()).strip("_"),
            )
            for line, error_type, column, text in rows
        ]

    def _add_csv_rejects(self, rejects: list[Issue], result: IngestResult) -> None:
        for issue in rejects:
            result.rejections[issue.reason] = result.rejections.get(issue.reason, 0) + 1
            result.rows_rejected += 1
            result.rows_read += 1
            if len(result.rejected_samples) < MAX_SAMPLES:
                result.rejected_samples.append(issue)

    def _number_samples(
        self,
        db: duckdb.DuckDBPyConnection,
        staged: Sequence[StagedSegment],
        fmt: str,
        header: Header,
        periods: Sequence[str],
        result: IngestResult,
    ) -> None:
        """Find the lines of the sampled rows: one more pass, only for files with problems, in
        file order (row_number over each segment's scan; the header is line 1), segment after
        segment until enough are found. Rejected and warned rows are looked for apart: a file
        whose every row has a warning still gets the lines of its rejected rows."""
        db.execute("SET preserve_insertion_order = true")
        csv_level = [s for s in result.rejected_samples if s.line]
        wanted = {
            "r": MAX_SAMPLES if len(csv_level) < len(result.rejected_samples) else 0,
            "w": MAX_SAMPLES if result.warning_samples else 0,
        }
        found: dict[str, list[tuple[int, Any]]] = {"r": [], "w": []}
        for segment in staged:
            if all(len(found[kind]) >= wanted[kind] for kind in found):
                break
            source, typed = _stages(header, self._source(db, segment.segment.path, fmt, header))
            rows = (
                f"(SELECT row_number() OVER () + 1 + {segment.records_before} AS n, "
                f"{_rejection(header, typed, periods)} AS r, {_warnings(header, typed)} AS w FROM {source})"
            )
            for kind, condition in (("r", "r IS NOT NULL"), ("w", "r IS NULL AND w IS NOT NULL")):
                if len(found[kind]) < wanted[kind]:
                    found[kind] += db.execute(
                        f"SELECT n, {kind} FROM {rows} WHERE {condition} LIMIT {wanted[kind] - len(found[kind])}"
                    ).fetchall()
        value_level = [Issue(int(n), r["column"] or "", r["value"] or "", r["reason"]) for n, r in found["r"]]
        result.rejected_samples = sorted(csv_level + value_level, key=lambda s: s.line)[:MAX_SAMPLES]
        warned = [(n, item) for n, w in found["w"] for item in w]
        result.warning_samples = [
            Issue(int(n), w["column"] or "", w["value"] or "", w["reason"]) for n, w in warned[:MAX_SAMPLES]
        ]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def check_periods(periods: Sequence[str]) -> list[str]:
    """Declared billing periods (`2024-09`), each checked; INVALID_ARGUMENT names a bad one."""
    for index, period in enumerate(periods):
        if not PERIOD.fullmatch(period):
            raise InvalidArgument.for_field(
                f"billing_periods[{index}]", f"{period[:40]!r} is not a billing period (YYYY-MM)"
            )
    if len(periods) > 36:
        raise InvalidArgument.for_field("billing_periods", "at most 36 billing periods per import")
    return sorted(set(periods))
