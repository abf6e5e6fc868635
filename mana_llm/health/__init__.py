"""Health: the one circuit breaker (breaker.py, pure) and what the gateway knows of each
provider's health (providers.py: a breaker per provider, fed by requests and probes, and how
operators read it). Sees only the leaves; routing, the cache and the gateway use it."""
