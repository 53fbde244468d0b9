"""Contracts and plumbing shared by every Tether service, in four layers:

- :mod:`tether.shared.wire`: pure, typed, versioned models of everything services exchange
  (work items and results, runs, logs, locations, snapshots, process messages, agent status);
- :mod:`tether.shared.nats`: Tether on NATS JetStream (subjects, streams, headers, the
  batching relay, service statuses, the work gate, authentication);
- :mod:`tether.shared.grpc`: the gRPC contract between launchers and code servers;
- :mod:`tether.shared.runtime`: the service lifecycle, settings, health, telemetry, cron and
  the ``tether`` entry point.

:mod:`tether.shared.agent_client` is the agent's client of the control plane's agent API.
"""
