"""``S3IOManager``: asset values as pickles in the customer's S3 bucket.

Needs boto3 (``pip install tether-codeserver[s3]``), imported when a run first stores or
loads a value, so the SDK imports without it. Credentials come from boto3's standard chain
in the run worker's environment (or fields set with ``EnvVar``): the control plane never
sees them or the values.

Layout: ``<prefix>/<key path>/__value`` for an unpartitioned asset and
``<prefix>/<key path>/<partition>`` (percent-quoted) for each partition: the same as the
filesystem IO manager's, so a run on a container with no volume reads what an earlier
container stored.
"""

from __future__ import annotations

import pickle
from typing import Any
from urllib.parse import unquote

from tether.sdk._asset_key import AssetKey
from tether.sdk._io_manager import (
    ConfigurableIOManager,
    InputContext,
    OutputContext,
    partition_file_name,
)


class S3IOManager(ConfigurableIOManager):
    """Stores each asset value as one S3 object.

    Attributes:
        bucket: the bucket (it must exist).
        prefix: key prefix of every object.
        endpoint_url: a non-AWS endpoint (MinIO, moto, a VPC endpoint).
        region_name: the bucket's region.
        aws_access_key_id: default: boto3's credential chain.
        aws_secret_access_key: default: boto3's credential chain.
    """

    bucket: str
    prefix: str = "tether-assets"
    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    def _client(self) -> Any:
        try:
            import boto3
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "S3IOManager needs boto3: pip install 'tether-codeserver[s3]'"
            ) from err
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
        )

    def object_key(self, key: AssetKey, partition_key: str | None) -> str:
        """The S3 key holding ``key``'s value (of one partition)."""
        leaf = "__value" if partition_key is None else partition_file_name(partition_key)
        return "/".join([*(p for p in self.prefix.split("/") if p), *key.path, leaf])

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        name = self.object_key(context.asset_key, context.partition_key)
        body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        # Who stored it, as the object's own metadata: read back with the value.
        stored_by = {"tether-run-id": context.run_id, "tether-step-key": context.step_key}
        self._client().put_object(
            Bucket=self.bucket,
            Key=name,
            Body=body,
            Metadata={k: v for k, v in stored_by.items() if v and v.isascii()},
        )
        context.add_output_metadata({"uri": f"s3://{self.bucket}/{name}", "bytes": len(body)})

    def load_input(self, context: InputContext) -> Any:
        client = self._client()
        key = context.asset_key
        if context.upstream_partitioned and context.partition_key is None:
            if context.asset_partition_keys is not None:
                return {
                    k: self._get(client, self.object_key(key, k), key, context, k)
                    for k in context.asset_partition_keys
                }
            folder = self.object_key(key, None).rsplit("/", 1)[0] + "/"
            out: dict[str, Any] = {}
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder
            ):
                for item in page.get("Contents", []):
                    leaf = item["Key"][len(folder) :]
                    if "/" not in leaf and leaf != "__value":
                        part = unquote(leaf)
                        out[part] = self._get(client, item["Key"], key, context, part)
            return dict(sorted(out.items()))
        partition = context.partition_key
        return self._get(client, self.object_key(key, partition), key, context, partition)

    def _get(
        self,
        client: Any,
        name: str,
        key: AssetKey,
        context: InputContext,
        partition_key: str | None = None,
    ) -> Any:
        try:
            found = client.get_object(Bucket=self.bucket, Key=name)
            body = found["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(
                f"no stored value of asset {key.to_user_string()} at s3://{self.bucket}/{name}:"
                " materialize it first"
            ) from None
        value = pickle.loads(body)  # noqa: S301 - the customer's own values, in their bucket
        context.record_loaded(found.get("Metadata", {}).get("tether-run-id"), partition_key)
        return value
