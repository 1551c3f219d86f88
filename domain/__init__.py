"""Domain messages shared across layers: market data, intents, orders, ticker configs."""
