"""Round-trip trade journal and P&L built from the order manager's fill stream."""
