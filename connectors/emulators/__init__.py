"""Contract emulators: small local HTTP servers that behave as each real API documents.

The sandbox (demo) and the tests point connectors at these. They enforce what the real API would
refuse (auth, batch limits, schemas) so a shared misunderstanding between emulator and connector
shows up as a failed contract test.
"""
