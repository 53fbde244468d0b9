"""Compute-log objects in the customer's S3 bucket: deterministic keys, puts, presigning.

boto3 blocks, so every call runs in a worker thread (``asyncio.to_thread``), at most
``max_concurrency`` at a time: the event loop keeps fetching, acking and answering health
checks while S3 is slow, and a burst of batches cannot open unbounded connections.
boto3 is imported lazily: it is an optional dependency (``tether-logship[s3]``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import Any

from tether.logship.settings import LogShipSettings
from tether.shared.wire.errors import TetherError
from tether.shared.wire.logs import (
    LOG_OBJECT_OFFSET_DIGITS,
    ComputeLogPointer,
    LogStream,
    compute_log_key_suffix,
)

#: A boto3 S3 client (boto3 ships no static types).
S3Client = Any

#: Digits of the offsets in object keys: keys sort by offset, and 16 digits hold 9 PB.
OFFSET_DIGITS = LOG_OBJECT_OFFSET_DIGITS


class LogStoreError(TetherError):
    """The compute-log storage is misconfigured or refuses a request."""


def object_key(
    prefix: str, run_id: str, step_key: str, stream: LogStream | str, offset: int, end: int
) -> str:
    """The key of the object holding bytes ``[offset, end)`` of one step's stream.

    A function of the natural key and the byte range only, so storing the same bytes again
    (a redelivered batch) overwrites the same object instead of adding one.
    """
    return prefix + compute_log_key_suffix(run_id, step_key, stream, offset, end)


class S3LogStore:
    """Writes and presigns compute-log objects in one bucket under one prefix.

    Args:
        settings: the logship's settings (bucket, prefix, region, endpoint, limits).
    """

    def __init__(self, settings: LogShipSettings) -> None:
        if not settings.s3_bucket:
            raise LogStoreError("no S3 bucket configured (TETHER_LOGSHIP_S3_BUCKET)")
        # Refuse at startup rather than retry every batch forever without boto3.
        if importlib.util.find_spec("boto3") is None:
            raise LogStoreError("S3 compute logs need boto3: install tether-logship[s3]")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.s3_max_concurrency)
        self._client: S3Client | None = None
        self._client_lock = asyncio.Lock()

    def _make_client(self) -> S3Client:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as err:  # pragma: no cover - depends on the install
            raise LogStoreError("S3 compute logs need boto3: install tether-logship[s3]") from err
        s = self._settings
        style = s.s3_addressing_style or ("path" if s.s3_endpoint_url else "auto")
        config = Config(
            signature_version="s3v4",
            connect_timeout=s.s3_connect_timeout_s,
            read_timeout=s.s3_read_timeout_s,
            retries={"max_attempts": s.s3_max_attempts, "mode": "standard"},
            max_pool_connections=s.s3_max_concurrency,
            s3={"addressing_style": style},
        )
        # A session per store: boto3's default session is not thread-safe to build clients
        # from, while a built client is safe to share between threads.
        session = boto3.session.Session()
        return session.client(
            "s3", region_name=s.s3_region, endpoint_url=s.s3_endpoint_url, config=config
        )

    async def client(self) -> S3Client:
        """The boto3 client, built once (off the event loop: it reads config files)."""
        async with self._client_lock:
            if self._client is None:
                self._client = await asyncio.to_thread(self._make_client)
            return self._client

    def key(
        self, run_id: str, step_key: str, stream: LogStream | str, offset: int, end: int
    ) -> str:
        """:func:`object_key` under this store's prefix."""
        return object_key(self.prefix, run_id, step_key, stream, offset, end)

    def owns(self, pointer: ComputeLogPointer) -> bool:
        """Whether ``pointer`` names exactly the object this store writes for its run,
        step, stream and bytes (never a prefix match: with an empty prefix that would be
        the whole bucket).

        Only those are presigned: a control plane asking for anything else in the
        customer's account gets a refusal, not a URL.
        """
        expected = self.key(
            pointer.run_id,
            pointer.step_key,
            pointer.stream,
            pointer.offset,
            pointer.offset + pointer.length,
        )
        return pointer.bucket == self.bucket and pointer.key == expected

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as object ``key`` (overwriting it: puts are idempotent)."""
        client = await self.client()
        async with self._slots:
            await asyncio.to_thread(
                client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="text/plain; charset=utf-8",
            )

    async def get(self, key: str) -> bytes:
        """The bytes of object ``key`` (for tools and tests; the UI uses presigned URLs)."""
        client = await self.client()
        async with self._slots:
            answer = await asyncio.to_thread(client.get_object, Bucket=self.bucket, Key=key)
            return await asyncio.to_thread(answer["Body"].read)

    async def presign(self, keys: list[str], expires_in_s: int) -> tuple[list[str], float]:
        """Presigned GET URLs of ``keys`` and when they expire (epoch seconds).

        Presigning is computed locally from the credentials (no request to S3).
        """
        client = await self.client()
        expires_at = time.time() + expires_in_s

        def sign_all() -> list[str]:
            return [
                client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=expires_in_s,
                )
                for key in keys
            ]

        async with self._slots:
            urls = await asyncio.to_thread(sign_all)
        return urls, expires_at
