"""Wire contracts and plumbing shared by every Tether service.

Everything two services must agree on lives here: NATS subjects and streams
(:mod:`tether.shared.subjects`, :mod:`tether.shared.streams`), typed versioned wire
messages (:mod:`tether.shared.messages`), the agent-API client
(:mod:`tether.shared.agent_client`), settings, tracing and the service lifecycle.
"""
