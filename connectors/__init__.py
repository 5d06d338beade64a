"""Everything that speaks to an outside API: sources, destinations, the shared HTTP core and emulators."""
