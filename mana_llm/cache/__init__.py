"""The response cache: a backend protocol, the guarded cache the gateway uses, keys, entries."""
