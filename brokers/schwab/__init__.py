"""The Schwab adapter, one concern a module:

- `adapter`: `SchwabAdapter`, the `BrokerAdapter` over schwab-py's synchronous client: orders,
  account, quotes and chains, and the fault handling that maps Schwab's answers to brokers.errors.
- `auth`: the OAuth web flow's checks, the stored token's age, the injected test transport, and
  the redactor on the SDK's loggers.
- `parsing`: pure mappings between domain objects and Schwab's JSON (order specs through
  schwab-py's templates, orders, positions, balances, quotes, chains, error bodies, streamer
  messages). No I/O.
- `stream`: `SchwabIndexStream`, `$SPX` over schwab-py's streaming client.
"""
