"""Tether on NATS JetStream: subjects, streams and buckets, headers, the batching relay,
dead letters, service statuses in KV, the work gate (signed-work checks), and NATS
authentication (JWT claims, credentials, the agent's keys).
"""
