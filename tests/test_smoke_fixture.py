def test_store_roundtrip_uses_own_prefix(store):
    store.redis.set(store.key("a"), "1")
    assert store.redis.get(store.key("a")) == "1"
    assert store.key("a").startswith(store.prefix + ":")
