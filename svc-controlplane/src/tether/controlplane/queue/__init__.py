"""The work queue: work items for agents (enqueue, lease, ack), the wake-ups of waiting
claims, agents' results and what each changes, and asking an agent and waiting for its
answer."""
