"""A three-node JetStream cluster with ``TETHER_NATS_REPLICAS=3``: streams and KV buckets
on three servers, moved there from one, and surviving the loss of a node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.api import KeyValueConfig, StorageType
from tether.shared.nats import streams
from tether.shared.nats.subjects import Stream
from tether.testing.cluster import NatsCluster, start_nats_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """Three nodes on free loopback ports, with the session's JWT auth, meta leader elected."""
    cluster = start_nats_cluster(tmp_path)
    try:
        await cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


async def test_owned_streams_and_buckets_are_kept_on_the_configured_replicas_and_moved_there(
    cluster: NatsCluster,
) -> None:
    nc = await cluster.connect()
    try:
        js = nc.jetstream()
        # As before the setting: one replica.
        await streams.ensure_owned_streams(js, "eventrelay")
        info = await js.stream_info(str(Stream.EVENTS))
        assert info.config.num_replicas == 1
        # The owner restarted with TETHER_NATS_REPLICAS=3 moves its streams in place.
        await streams.ensure_owned_streams(js, "eventrelay", replicas=3)
        for spec in streams.owned_by("eventrelay"):
            info = await js.stream_info(str(spec.name))
            assert info.config.num_replicas == 3, spec.name
        await cluster.wait_current(str(Stream.EVENTS))
        info = await js.stream_info(str(Stream.EVENTS))
        assert info.cluster is not None
        assert {info.cluster.leader, *(p.name for p in info.cluster.replicas or [])} == set(
            cluster.nodes
        )

        config = KeyValueConfig(bucket="T_REPLICAS", history=1, storage=StorageType.FILE)
        kv = await streams.bind_bucket(js, config, replicas=3)
        assert (await js.stream_info("KV_T_REPLICAS")).config.num_replicas == 3
        await kv.put("k", b"v")
        # A reader that does not know the setting leaves the count alone.
        await streams.bind_bucket(js, config)
        assert (await js.stream_info("KV_T_REPLICAS")).config.num_replicas == 3
        # A bucket made with one replica is moved, its data and its other limits kept.
        old = KeyValueConfig(bucket="T_OLD", history=5, storage=StorageType.FILE)
        await (await streams.bind_bucket(js, old)).put("k", b"kept")
        assert (await js.stream_info("KV_T_OLD")).config.num_replicas == 1
        moved = await streams.bind_bucket(js, old, replicas=3)
        info = await js.stream_info("KV_T_OLD")
        assert info.config.num_replicas == 3
        assert info.config.max_msgs_per_subject == 5
        assert (await moved.get("k")).value == b"kept"
    finally:
        await nc.close()
