"""Settings, the instrument catalog and timeframes: the bottom layer every package may import."""
