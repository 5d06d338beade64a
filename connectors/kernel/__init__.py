"""What every connector shares: HTTP client and retries, rate limits, the error taxonomy and table,
paginators, records, identifier normalization, the destination and source bases, the emulator
harness, API descriptions, and the vendor registry."""
