"""Google Customer Match through the Data Manager API: discovery-document validator and contract emulator."""
