"""The ledger as a FOCUS dataset: FinOps Open Cost and Usage Specification, version 1.2.

Spec: FOCUS 1.2 (FinOps Foundation, https://focus.finops.org/focus-specification/v1-2/).  One
row per UTC day, tenant and route (and model id, price version and policy version), so a row
is one charge period of one priced SKU.  Written as CSV, or Parquet when pyarrow is installed.

Columns:

* every column 1.2 makes Mandatory (`MANDATORY_1_2`): BilledCost, BillingAccountId,
  BillingAccountName, BillingCurrency, BillingPeriodEnd, BillingPeriodStart, ChargeCategory,
  ChargeClass, ChargeDescription, ChargePeriodEnd, ChargePeriodStart, ContractedCost,
  EffectiveCost, InvoiceIssuerName, ListCost, PricingQuantity, PricingUnit, ProviderName,
  PublisherName, ServiceCategory, ServiceName;
* the token pricing of SaaS usage: PricingUnit ``1000000 Tokens`` with PricingQuantity in
  millions of tokens, ConsumedQuantity / ConsumedUnit (``Tokens``), ListUnitPrice and
  ContractedUnitPrice (USD per million tokens, input and output blended), PricingCategory
  ``Standard``, SkuId / SkuPriceId / SkuMeter, ChargeFrequency ``Usage-Based``;
* provider, region, service and model as FOCUS names them: ProviderName, InvoiceIssuerName,
  ServiceName and ServiceCategory (``AI and Machine Learning``) / ServiceSubcategory
  (``Generative AI``), RegionId / RegionName, ResourceId (the provider's model id),
  ResourceName (the logical model), SubAccountId / SubAccountName (the tenant);
* the columns FOCUS 1.0 requires besides (nullable ones empty), so 1.0 tools read the file;
* the broker's own dimensions as custom columns, prefixed ``x_`` as the specification's
  custom-column rules require: x_Tenant, x_RouteId, x_Jurisdiction, x_Model,
  x_UsageEstimated, x_EstimatedAttempts, x_PolicyVersion, x_PriceVersion, x_InputTokens,
  x_OutputTokens, x_CachedInputTokens, x_Requests, x_Attempts, x_PriceUnknown.

The broker charges list prices with no negotiated discount, so BilledCost = EffectiveCost =
ListCost = ContractedCost = the metered cost.  FOCUS does not allow a null cost: usage whose
price was unknown is a row with cost 0, empty unit prices and ``x_PriceUnknown = true``,
and ChargeDescription says the price is unknown.  The cost columns sum exactly to the
ledger's total of known costs.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from broker.errors import MissingDependency
from broker.metering.query import ReportFilters, tidy_decimal

__all__ = ["COLUMNS", "CUSTOM_COLUMNS", "FOCUS_VERSION", "LEGACY_COLUMNS", "MANDATORY_1_2", "focus_csv_text",
           "focus_rows", "write_focus_csv", "write_focus_parquet"]

FOCUS_VERSION = "1.2"
MANDATORY_1_2 = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
_OTHER = (
    "AvailabilityZone", "BillingAccountType", "CapacityReservationId", "CapacityReservationStatus",
    "ChargeFrequency", "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType", "CommitmentDiscountUnit",
    "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "InvoiceId", "ListUnitPrice", "PricingCategory",
    "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceSubcategory", "SkuId",
    "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName", "SubAccountType", "Tags",
)
CUSTOM_COLUMNS = (
    "x_Tenant", "x_RouteId", "x_Jurisdiction", "x_Model", "x_UsageEstimated", "x_EstimatedAttempts",
    "x_PolicyVersion", "x_PriceVersion", "x_InputTokens", "x_OutputTokens", "x_CachedInputTokens", "x_Requests",
    "x_Attempts", "x_PriceUnknown",
)
#: FOCUS columns in the specification's (alphabetical) order, then the custom columns.
COLUMNS = (*sorted((*MANDATORY_1_2, *_OTHER)), *CUSTOM_COLUMNS)
_DECIMALS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity", "ConsumedQuantity",
             "ListUnitPrice", "ContractedUnitPrice")
_DATES = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")

#: provider -> (ProviderName / InvoiceIssuerName, ServiceName)
_PROVIDERS = {
    "bedrock": ("Amazon Web Services", "Amazon Bedrock"),
    "vertex": ("Google Cloud", "Vertex AI"),
    "azure": ("Microsoft", "Azure AI Foundry"),
    "groq": ("Groq", "GroqCloud"),
    "local": ("On-premises", "Local inference runner"),
}
_GRAIN = ("day", "tenant", "provider", "region", "jurisdiction", "model", "model_id", "route_id", "price_version",
          "policy_version")
_MTOK = Decimal(1_000_000)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Decimal) -> str:
    return format(tidy_decimal(value), "f")


def focus_rows(
    ledger: Any, filters: ReportFilters | None = None, *, account: str = "llama-broker"
) -> Iterator[dict[str, Any]]:
    """FOCUS rows (Decimal money and quantities, aware datetimes) from one ledger ``GROUP BY``."""
    for r in ledger.aggregate(group_by=list(_GRAIN), filters=filters or ReportFilters()):
        day = datetime.strptime(str(r["day"]), "%Y-%m-%d").replace(tzinfo=timezone.utc)
        month = day.replace(day=1)
        provider = str(r["provider"])
        issuer, service = _PROVIDERS.get(provider, (provider, f"{provider} inference"))
        tokens = int(r["input_tokens"]) + int(r["output_tokens"])
        known = r["cost_usd"] is not None
        cost = Decimal(r["cost_usd"]) if known else Decimal(0)
        quantity = Decimal(tokens) / _MTOK
        unit_price = (cost / quantity).quantize(Decimal("1e-12")) if known and tokens else None
        what = f"{tokens:,} tokens of {r['model']} on route {r['route_id']} for tenant {r['tenant']}"
        yield {
            "AvailabilityZone": None, "BilledCost": cost, "BillingAccountId": account,
            "BillingAccountName": f"{account} usage ledger", "BillingAccountType": "Billing Account",
            "BillingCurrency": "USD", "BillingPeriodEnd": (month + timedelta(days=32)).replace(day=1),
            "BillingPeriodStart": month, "CapacityReservationId": None, "CapacityReservationStatus": None,
            "ChargeCategory": "Usage", "ChargeClass": None,
            "ChargeDescription": what if known else what + " (price unknown)", "ChargeFrequency": "Usage-Based",
            "ChargePeriodEnd": day + timedelta(days=1), "ChargePeriodStart": day,
            "CommitmentDiscountCategory": None, "CommitmentDiscountId": None, "CommitmentDiscountName": None,
            "CommitmentDiscountQuantity": None, "CommitmentDiscountStatus": None, "CommitmentDiscountType": None,
            "CommitmentDiscountUnit": None, "ConsumedQuantity": Decimal(tokens), "ConsumedUnit": "Tokens",
            "ContractedCost": cost, "ContractedUnitPrice": unit_price, "EffectiveCost": cost, "InvoiceId": None,
            "InvoiceIssuerName": issuer, "ListCost": cost, "ListUnitPrice": unit_price,
            "PricingCategory": "Standard", "PricingQuantity": quantity, "PricingUnit": "1000000 Tokens",
            "ProviderName": issuer, "PublisherName": "Meta", "RegionId": r["region"], "RegionName": r["region"],
            "ResourceId": r["model_id"], "ResourceName": r["model"], "ResourceType": "Model",
            "ServiceCategory": "AI and Machine Learning", "ServiceName": service,
            "ServiceSubcategory": "Generative AI", "SkuId": r["model_id"], "SkuMeter": "Tokens",
            "SkuPriceDetails": json.dumps({"x_InputTokens": int(r["input_tokens"]),
                                           "x_OutputTokens": int(r["output_tokens"])}, sort_keys=True),
            "SkuPriceId": f"{r['route_id']}@{r['price_version'] or 'unpriced'}", "SubAccountId": r["tenant"],
            "SubAccountName": r["tenant"], "SubAccountType": "Tenant", "Tags": "{}",
            "x_Tenant": r["tenant"], "x_RouteId": r["route_id"], "x_Jurisdiction": r["jurisdiction"],
            "x_Model": r["model"], "x_UsageEstimated": bool(r["estimated_calls"]),
            "x_EstimatedAttempts": int(r["estimated_calls"]), "x_PolicyVersion": r["policy_version"],
            "x_PriceVersion": r["price_version"], "x_InputTokens": int(r["input_tokens"]),
            "x_OutputTokens": int(r["output_tokens"]), "x_CachedInputTokens": int(r["cached_input_tokens"]),
            "x_Requests": int(r["calls"]), "x_Attempts": int(r["attempts"]), "x_PriceUnknown": not known,
        }


#: Names the FOCUS 1.0-preview used for columns 1.0 renamed, and the ChargeType 1.0 replaced; written
#: only on request (`legacy_columns`) for readers still on the old names, such as focus-validator 1.0.0.
LEGACY_COLUMNS = {"InvoiceIssuer": "InvoiceIssuerName", "Provider": "ProviderName", "Publisher": "PublisherName",
                  "ResourceID": "ResourceId", "ChargeType": "ChargeCategory"}


def _cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = _text(value)
        return text if "." in text else text + ".0"  # a decimal column reads as decimal, never integer
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_focus_csv(
    rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]], out: IO[str], *, legacy_columns: bool = False
) -> int:
    """Write FOCUS rows as CSV (header first; `legacy_columns` adds `LEGACY_COLUMNS`); returns the row count."""
    writer = csv.writer(out, lineterminator="\n")
    extra = tuple(LEGACY_COLUMNS) if legacy_columns else ()
    writer.writerow((*COLUMNS, *extra))
    count = 0
    for row in rows:
        writer.writerow([_cell(c, row[c]) for c in COLUMNS] + [_cell(c, row[LEGACY_COLUMNS[c]]) for c in extra])
        count += 1
    return count


def focus_csv_text(rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]], *, legacy_columns: bool = False) -> str:
    """The CSV as a string."""
    buffer = io.StringIO()
    write_focus_csv(rows, buffer, legacy_columns=legacy_columns)
    return buffer.getvalue()


def write_focus_parquet(rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]], path: str | Path) -> int:
    """Write FOCUS rows as Parquet (needs pyarrow): decimals as decimal128(38, 12), times as UTC timestamps."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        err = MissingDependency("FOCUS Parquet export", "pyarrow", "reports")
        err.args = ("Parquet needs pyarrow: pip install 'llama-broker[reports]' (or write CSV)",)
        raise err from exc
    listed = list(rows)
    fields = []
    for c in COLUMNS:
        if c in _DECIMALS:
            kind = pa.decimal128(38, 12)
        elif c in _DATES:
            kind = pa.timestamp("s", tz="UTC")
        elif c in ("x_UsageEstimated", "x_PriceUnknown"):
            kind = pa.bool_()
        elif c.startswith("x_") and c.endswith(("Tokens", "Attempts", "Requests")):
            kind = pa.int64()
        else:
            kind = pa.string()
        fields.append(pa.field(c, kind))
    scale = Decimal("1e-12")
    columns = {c: [(row[c].quantize(scale) if isinstance(row[c], Decimal) else row[c]) for row in listed]
               for c in COLUMNS}
    table = pa.Table.from_pydict(columns, schema=pa.schema(fields))
    pq.write_table(table, str(path))
    return len(listed)
