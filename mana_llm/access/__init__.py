"""Who is calling: the keys file's callers (keys.py), their limits and budgets (limits.py, with
the shared counters in SQLite or Redis), what each request cost (prices.py, ledger.py), and the
one step of the request pipeline that admits a request and settles it (gate.py)."""
