"""The bank test: Jepsen's bank workload against the transfer service, with faults injected."""
