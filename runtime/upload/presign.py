"""Where a sample file goes: a presigned PUT URL, from the platform or signed here for an S3 bucket.

Two modes, both ending in a URL that `stream_put` can PUT to:
* platform: POST the object key to the configured presign endpoint (bearer token from
  $RLRUN_PRESIGN_TOKEN) and get back `{"url": ...}`;
* S3-compatible bucket (AWS, MinIO, R2): botocore signs a SigV4 query-string URL with credentials from
  $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY / $AWS_SESSION_TOKEN. They are read from the environment
  explicitly so a missing one fails at once instead of botocore probing instance metadata over the network.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import botocore.session
import httpx
from botocore.config import Config

from rlrun.runtime.config import check_safe_id
from rlrun.runtime.upload.put import UploadError, redact_text, redact_url

PRESIGN_TOKEN_ENV = "RLRUN_PRESIGN_TOKEN"
PRESIGN_TIMEOUT = httpx.Timeout(30.0)
URL_TTL_S = 3600


class DropSigningDetails(logging.Filter):
    """botocore.auth logs the canonical request (with the access key id), the string to sign and the
    signature itself at DEBUG; a presigned URL is a bearer credential, so those records never pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _hide_signing_logs() -> None:
    logger = logging.getLogger("botocore.auth")
    if not any(isinstance(f, DropSigningDetails) for f in logger.filters):
        logger.addFilter(DropSigningDetails())


def object_key(prefix: str, run_id: str, step: int) -> str:
    """`<prefix>/run_<run_id>/step_<step>.parquet`; the run id is validated because it becomes a path."""
    check_safe_id(run_id, "RUN_ID")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return "/".join(p for p in (prefix.strip("/"), f"run_{run_id}", f"step_{step}.parquet") if p)


def s3_client_from_env(endpoint_url: str | None, region: str) -> Any:
    """A botocore S3 client signing with the environment's credentials (path-style for custom endpoints)."""
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise UploadError(
            "sampleUpload.bucket is set but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both "
            "in the environment"
        )
    _hide_signing_logs()
    config = Config(signature_version="s3v4", s3={"addressing_style": "path" if endpoint_url else "auto"})
    return botocore.session.get_session().create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        config=config,
    )


def presign_s3_put(s3_client: Any, bucket: str, key: str, expires_s: int = URL_TTL_S) -> str:
    """A SigV4 presigned PUT URL for `bucket/key`, valid `expires_s` seconds (signing is local, no I/O)."""
    url: str = s3_client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
    )
    return url


async def request_presigned_url(
    client: httpx.AsyncClient, endpoint: str, key: str, size_bytes: int, token: str | None
) -> str:
    """Ask the platform's presign endpoint for a PUT URL for `key`. Errors name the endpoint (redacted)
    and the status, never the token or the returned URL."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = {"key": key, "contentType": "application/parquet", "sizeBytes": size_bytes}
    shown = redact_url(endpoint)
    try:
        response = await client.post(endpoint, json=payload, headers=headers, timeout=PRESIGN_TIMEOUT)
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {redact_text(str(exc))}"
        raise UploadError(f"presign request to {shown} failed: {detail}", transient=True) from None
    if not response.is_success:
        raise UploadError(
            f"presign endpoint {shown} answered HTTP {response.status_code} for key {key!r}",
            status=response.status_code,
            transient=response.status_code >= 500,
        )
    try:
        url = response.json()["url"]
    except (ValueError, KeyError, TypeError):
        raise UploadError(f"presign endpoint {shown} did not answer a JSON object with a 'url'") from None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise UploadError(f"presign endpoint {shown} answered a 'url' that is not an http(s) URL")
    return url
