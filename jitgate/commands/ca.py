"""`jitgate ca init`: the gateway fleet's one CA, made once and kept in Secrets Manager."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jitgate.errors import JitgateError

app = typer.Typer(no_args_is_help=True, help="The gateway fleet's CA.")
out = Console(stderr=True)


def secrets_client(aws_endpoint: str, region: str) -> object:
    import os

    import boto3

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    return boto3.client("secretsmanager", endpoint_url=aws_endpoint or None, region_name=region or None)


@app.command("init")
def init(
    secret: Annotated[str, typer.Option(help="Secrets Manager name of the CA (key and certificate).")],
    cert_out: Annotated[Path, typer.Option(help="Where to write the certificate for clients.")] = Path(
        "jitgate-gateway-ca.pem"
    ),
    rotate: Annotated[bool, typer.Option(help="Replace the CA of an existing secret (a new version).")] = False,
    common_name: Annotated[str, typer.Option(help="The CA's subject common name.")] = "jitgate gateway CA",
    aws_endpoint: Annotated[str, typer.Option(envvar="AWS_ENDPOINT_URL", help="Local AWS endpoint.")] = "",
    region: Annotated[str, typer.Option(envvar="AWS_REGION")] = "",
) -> None:
    """Make a new gateway CA, store it as SECRET and write its certificate to CERT_OUT."""
    from jitgate.gateway_ca import certificate_pem, fingerprint, new_ca, store_secret

    ca = new_ca(common_name)
    try:
        arn = store_secret(secrets_client(aws_endpoint, region), secret, ca, rotate=rotate)
    except JitgateError as exc:
        out.print(f"[red]jitgate ca init: {exc.code}: {exc.message}[/red]")
        if not rotate:
            out.print("(an existing CA is replaced only with --rotate; see docs/deployment.md)")
        raise typer.Exit(1) from None
    cert = certificate_pem(ca)
    cert_out.write_text(cert)
    out.print(f"stored {arn}\ncertificate: {cert_out}\nsha256 fingerprint: {fingerprint(cert)}")
