"""The Tastytrade adapter, one concern a module:

- `adapter`: `TastytradeAdapter`, the synchronous `BrokerAdapter` over the async-only tastytrade
  SDK: login, orders, account, quotes and chains, and the fault handling that maps Tastytrade's
  answers to brokers.errors.
- `auth`: the OAuth endpoints, token-request errors, the rotated-refresh-token watch.
- `http_trace`: what each SDK call did on the wire (status codes the SDK's exceptions drop).
- `loop`: the adapter's one event loop on one daemon thread.
- `parsing`: pure mappings between domain objects and the SDK's models. No I/O, no session.
"""
