"""Everything that speaks to an outside API: one shared kernel (``connectors.kernel``) and one folder per
vendor, each holding its connector(s), its contract emulator, its API description and a declaration
(``VENDOR`` in its ``__init__``) that registers it. Nothing central lists vendors."""
