"""`llama-broker serve`: an OpenAI-compatible HTTP gateway over the broker's engine, ledger and limits.

::

    from broker.gateway import Gateway
    app = Gateway("policies/gateway.yaml")      # an ASGI application; run it on any ASGI server

API keys map to tenants in the policy (`api_keys:` by environment variable or SHA-256, see
`broker.gateway.keys`); statuses follow `broker.gateway.errors.STATUS_TABLE`.  `llama-broker
serve` runs it on granian (`broker.gateway.server`); granian and prometheus-client come with the
`gateway` extra and are imported only by this package.
"""

from .app import METRICS_TOKEN_ENV, Gateway
from .errors import STATUS_TABLE
from .keys import KeyTable, key_digest

__all__ = ["METRICS_TOKEN_ENV", "STATUS_TABLE", "Gateway", "KeyTable", "key_digest"]
