"""One module per schema revision; the first is the baseline (hand-written schema version 6)."""
