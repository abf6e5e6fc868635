"""Resolution of model strings, the fallback walk, the commit point and provider health."""
