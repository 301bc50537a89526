"""Attribute and metric names: the OpenTelemetry GenAI semantic conventions, and the broker's own.

Pure data: importing this module imports nothing from `opentelemetry`.

| attribute                          | on                        | value                                        |
|------------------------------------|---------------------------|----------------------------------------------|
| `gen_ai.operation.name`            | call, attempt, metrics    | `chat`                                       |
| `gen_ai.provider.name`             | call, attempt, metrics    | well-known names (`PROVIDER_NAMES`), else ours |
| `gen_ai.request.model`             | call, attempt, metrics    | the logical model asked for (`llama-3.3-70b`) |
| `gen_ai.response.model`            | call, attempt, metrics    | the route's model id that answered            |
| `gen_ai.usage.input_tokens` / `output_tokens` | call, attempt  | metered usage                                 |
| `server.address` / `server.port`   | call, attempt, metrics    | from the route's `endpoint`, when it has one  |
| `error.type`                       | call, attempt, metrics    | the broker error's kind (`Throttled`, ...)    |
| `llama_broker.tenant`              | call, attempt, metrics    | the tenant metered                            |
| `llama_broker.route`, `.region`, `.jurisdiction` | attempt, metrics; call: the answering route |
| `llama_broker.cost_usd`            | call (sum), attempt       | a float; absent when the price is unknown     |
| `llama_broker.decision_id`, `.request_id` | call, attempt      | ids shared with the ledger and the audit trail|
| `llama_broker.attempt`             | attempt                   | 1, 2, ... within the call                     |
| `llama_broker.energy_j`, `.energy_attributed` | attempt        | when the route's runner is measured           |
| `gen_ai.input.messages` / `gen_ai.output.messages` | call      | JSON, only with `telemetry.capture_content`   |
"""

from __future__ import annotations

__all__ = [
    "DURATION_BUCKETS_S",
    "PROVIDER_NAMES",
    "TOKEN_BUCKETS",
    "otel_provider_name",
]

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_ID = "gen_ai.response.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

TENANT = "llama_broker.tenant"
ROUTE = "llama_broker.route"
REGION = "llama_broker.region"
JURISDICTION = "llama_broker.jurisdiction"
COST_USD = "llama_broker.cost_usd"
DECISION_ID = "llama_broker.decision_id"
REQUEST_ID = "llama_broker.request_id"
ATTEMPT = "llama_broker.attempt"
ATTEMPTS = "llama_broker.attempts"
USAGE_ESTIMATED = "llama_broker.usage_estimated"
ENERGY_J = "llama_broker.energy_j"
ENERGY_ATTRIBUTED = "llama_broker.energy_attributed"

TOKEN_USAGE_METRIC = "gen_ai.client.token.usage"
DURATION_METRIC = "gen_ai.client.operation.duration"

#: the conventions' well-known `gen_ai.provider.name` values for the built-in providers
PROVIDER_NAMES: dict[str, str] = {
    "bedrock": "aws.bedrock",
    "vertex": "gcp.vertex_ai",
    "azure": "azure.ai.inference",
    "groq": "groq",
}

#: the explicit bucket boundaries the conventions advise for the two metrics
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)


def otel_provider_name(provider: str) -> str:
    """The `gen_ai.provider.name` of a broker provider (its own name when the conventions list none)."""
    return PROVIDER_NAMES.get(provider, provider)
