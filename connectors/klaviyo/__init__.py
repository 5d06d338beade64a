"""Klaviyo (API revision 2026-07-15): the contract emulator and its notes (``CONTRACT.md``)."""
