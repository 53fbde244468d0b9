"""Tether on NATS JetStream: subjects, streams and buckets, headers, the batching relay,
service statuses in KV, the work gate (signed-work checks), and NATS authentication.
"""
