"""Runs: launching, re-executing and terminating them, and the one state machine
(:mod:`.lifecycle`) every status move of a run goes through."""
