"""State store: the Redis client and key namespace (bottom layer, beside config)."""
