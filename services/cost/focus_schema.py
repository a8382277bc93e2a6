"""The FOCUS columns the cost service stores, and how an export's header maps onto them.

FOCUS 1.2 is the canonical schema; the 1.3 columns (ServiceProviderName, HostProviderName,
the Allocated* columns, ContractApplied) are stored as well, so that a 1.3 export loses
nothing. Exports of 1.0 and 1.1 map onto it by name (the versions renamed no column, they only
added some): columns a version lacks are NULL. Column lists and types are those of the
specification's `columns/` pages at the v1.0, v1.1 and v1.2 tags; 1.3's additions are the
ratified 1.3 release's.

Columns the specification does not define (`x_` columns, and columns such as the `Id` some
exports add without the prefix) are kept per row in one `x_extensions` map.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from services.runtime.errors import InvalidArgument


class Kind(Enum):
    """How a column's text is read."""

    TEXT = "VARCHAR"
    DECIMAL = "DECIMAL(38,15)"  # money and quantities: never a float
    TIME = "TIMESTAMPTZ"
    TAGS = "MAP(VARCHAR, VARCHAR)"  # a JSON object, or key=value pairs
    JSON = "JSON"


# Money keeps 15 fractional digits (real exports carry up to 11; the sample in
# ../shared/data/focus does): more are rounded, half away from zero, by DuckDB's cast.
DECIMAL_SCALE = 15

_T, _D, _TS = Kind.TEXT, Kind.DECIMAL, Kind.TIME
# (column, kind, the version that introduced it). Order: the 1.2 specification's, then 1.3's.
COLUMNS: tuple[tuple[str, Kind, str], ...] = (
    ("AvailabilityZone", _T, "1.0"),
    ("BilledCost", _D, "1.0"),
    ("BillingAccountId", _T, "1.0"),
    ("BillingAccountName", _T, "1.0"),
    ("BillingAccountType", _T, "1.2"),
    ("BillingCurrency", _T, "1.0"),
    ("BillingPeriodEnd", _TS, "1.0"),
    ("BillingPeriodStart", _TS, "1.0"),
    ("CapacityReservationId", _T, "1.1"),
    ("CapacityReservationStatus", _T, "1.1"),
    ("ChargeCategory", _T, "1.0"),
    ("ChargeClass", _T, "1.0"),
    ("ChargeDescription", _T, "1.0"),
    ("ChargeFrequency", _T, "1.0"),
    ("ChargePeriodEnd", _TS, "1.0"),
    ("ChargePeriodStart", _TS, "1.0"),
    ("CommitmentDiscountCategory", _T, "1.0"),
    ("CommitmentDiscountId", _T, "1.0"),
    ("CommitmentDiscountName", _T, "1.0"),
    ("CommitmentDiscountQuantity", _D, "1.1"),
    ("CommitmentDiscountStatus", _T, "1.0"),
    ("CommitmentDiscountType", _T, "1.0"),
    ("CommitmentDiscountUnit", _T, "1.1"),
    ("ConsumedQuantity", _D, "1.0"),
    ("ConsumedUnit", _T, "1.0"),
    ("ContractedCost", _D, "1.0"),
    ("ContractedUnitPrice", _D, "1.0"),
    ("EffectiveCost", _D, "1.0"),
    ("InvoiceId", _T, "1.2"),
    ("InvoiceIssuerName", _T, "1.0"),
    ("ListCost", _D, "1.0"),
    ("ListUnitPrice", _D, "1.0"),
    ("PricingCategory", _T, "1.0"),
    ("PricingCurrency", _T, "1.2"),
    ("PricingCurrencyContractedUnitPrice", _D, "1.2"),
    ("PricingCurrencyEffectiveCost", _D, "1.2"),
    ("PricingCurrencyListUnitPrice", _D, "1.2"),
    ("PricingQuantity", _D, "1.0"),
    ("PricingUnit", _T, "1.0"),
    ("ProviderName", _T, "1.0"),
    ("PublisherName", _T, "1.0"),
    ("RegionId", _T, "1.0"),
    ("RegionName", _T, "1.0"),
    ("ResourceId", _T, "1.0"),
    ("ResourceName", _T, "1.0"),
    ("ResourceType", _T, "1.0"),
    ("ServiceCategory", _T, "1.0"),
    ("ServiceName", _T, "1.0"),
    ("ServiceSubcategory", _T, "1.1"),
    ("SkuId", _T, "1.0"),
    ("SkuMeter", _T, "1.1"),
    ("SkuPriceDetails", Kind.JSON, "1.1"),
    ("SkuPriceId", _T, "1.0"),
    ("SubAccountId", _T, "1.0"),
    ("SubAccountName", _T, "1.0"),
    ("SubAccountType", _T, "1.2"),
    ("Tags", Kind.TAGS, "1.0"),
    ("AllocatedMethodDetails", Kind.JSON, "1.3"),
    ("AllocatedMethodId", _T, "1.3"),
    ("AllocatedResourceId", _T, "1.3"),
    ("AllocatedResourceName", _T, "1.3"),
    ("AllocatedTags", Kind.TAGS, "1.3"),
    ("ContractApplied", Kind.JSON, "1.3"),
    ("HostProviderName", _T, "1.3"),
    ("ServiceProviderName", _T, "1.3"),
)
KINDS: dict[str, Kind] = {name: kind for name, kind, _ in COLUMNS}
VERSIONS = ("1.0", "1.1", "1.2", "1.3")
EXTENSIONS_COLUMN = "x_extensions"  # columns FOCUS does not define, name -> text
WARNINGS_COLUMN = "x_warnings"  # what was normalised or missing in the row

# What the service cannot do without: a row missing one is rejected. The other columns that
# FOCUS makes mandatory and non-null are warned about when null, and the row is kept.
REQUIRED = (
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "BillingCurrency",
    "BilledCost",
    "EffectiveCost",
)
MANDATORY_NOT_NULL = (
    "BillingAccountId",
    "ContractedCost",
    "InvoiceIssuerName",
    "ListCost",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
)
# Allowed values (FOCUS 1.2), matched without regard to case and stored as spelt here.
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
CHARGE_FREQUENCIES = ("One-Time", "Recurring", "Usage-Based")
CHARGE_CLASSES = ("Correction",)

MAX_COLUMNS = 1000
MAX_COLUMN_NAME = 256


@dataclass(frozen=True)
class Header:
    """An export's columns, as the service reads them."""

    # FOCUS column -> the export's own spelling of it (FOCUS names are matched without case).
    focus: dict[str, str]
    unknown: tuple[str, ...]  # columns FOCUS does not define, kept in x_extensions
    version: str  # the newest FOCUS version whose columns it has
    names: tuple[str, ...] = ()  # every column, in the file's order


def detect_version(columns: Sequence[str]) -> str:
    """The newest FOCUS version that introduced one of `columns` (1.0 for the oldest set)."""
    introduced = {name: version for name, _, version in COLUMNS}
    found = [introduced[c] for c in columns if c in introduced]
    return max(found, key=VERSIONS.index) if found else VERSIONS[0]


def read_header(names: Sequence[str]) -> Header:
    """Map an export's column names onto FOCUS; INVALID_ARGUMENT when it cannot be a FOCUS
    export (a column the service requires is missing, a column named twice)."""
    if len(names) > MAX_COLUMNS:
        raise InvalidArgument.for_field(
            "body", f"the file has {len(names)} columns; at most {MAX_COLUMNS}", reason="TOO_MANY_COLUMNS"
        )
    by_lower = {name.lower(): name for name, _, _ in COLUMNS}
    focus: dict[str, str] = {}
    unknown: list[str] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name or len(name) > MAX_COLUMN_NAME:
            raise InvalidArgument.for_field(
                "body",
                f"the header has an empty or over-long column name ({name[:40]!r}…)",
                reason="BAD_HEADER",
            )
        if name.lower() in seen:
            raise InvalidArgument.for_field(
                "body", f"the header names column {name[:80]!r} twice", reason="DUPLICATE_COLUMN"
            )
        seen.add(name.lower())
        canonical = by_lower.get(name.lower())
        if canonical is None:
            unknown.append(name)
        else:
            focus[canonical] = raw
    missing = [column for column in REQUIRED if column not in focus]
    if missing:
        shown = ", ".join(n[:40] for n in list(names)[:8])
        raise InvalidArgument.for_field(
            "body",
            f"not a FOCUS export: the header lacks {', '.join(missing)} (it has {shown}"
            f"{', …' if len(names) > 8 else ''})",
            reason="NOT_FOCUS",
        )
    return Header(
        focus=focus, unknown=tuple(unknown), version=detect_version(list(focus)), names=tuple(names)
    )


def csv_header(first_line: bytes) -> list[str]:
    """The column names of a CSV's first line (quoted or not, with or without a BOM)."""
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument.for_field(
            "body",
            "the header line is not UTF-8 text: is this a CSV, gzip or Parquet file?",
            reason="NOT_TEXT",
        ) from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise InvalidArgument.for_field(
            "body", "the file is empty or has no header line", reason="EMPTY_FILE"
        )
    return rows[0]
