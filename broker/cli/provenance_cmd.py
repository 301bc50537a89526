"""`llama-broker provenance verify`: trusted, untrusted, tampered or unsigned, for a record or a text.

Exit status: 0 valid and trusted, 3 valid but untrusted, 4 tampered, 5 unsigned (2: bad input).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["provenance_app"]

provenance_app = typer.Typer(no_args_is_help=True, add_completion=False)

_EXIT = {"valid-trusted": 0, "valid-untrusted": 3, "tampered": 4, "unsigned": 5}


def _anchors(trust: Path | None, policy: Path | None) -> Path | None:
    if trust is not None or policy is None:
        return trust
    from broker.policy.loader import load_policy

    configured = load_policy(policy).provenance.trust_anchors_file
    return Path(configured).expanduser() if configured else None


@provenance_app.command("verify")
def verify(
    source: Path = typer.Argument(..., help="A record file (response.provenance as JSON) or a text carrying one."),
    text: Path | None = typer.Option(None, "--text", help="The answer's text, checked against a record file."),
    trust: Path | None = typer.Option(None, "--trust", help="PEM trust anchors (default: the policy's list)."),
    policy: Path | None = typer.Option(None, "--policy", "-p", help="Policy whose trust_anchors_file to use."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
) -> None:
    """Verify a provenance record: its C2PA signature, its trust chain and the answer it describes."""
    from broker.provenance.verify import verify_path

    result = verify_path(source, text=text, trust_anchors=_anchors(trust, policy))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        typer.echo(result.verdict.value)
        signer = result.signer
        if signer:
            typer.echo(f"  signed by: {signer.get('common_name', '?')} ({signer.get('issuer', '?')})")
        if result.record is not None:
            r = result.record
            typer.echo(f"  {r.provider}/{r.region or '-'} [{r.jurisdiction}] {r.provider_model_id}, "
                       f"policy {r.policy_version}, request {r.request_id}")
        for reason in result.reasons:
            typer.echo(f"  - {reason}")
    raise typer.Exit(_EXIT[result.verdict.value])
