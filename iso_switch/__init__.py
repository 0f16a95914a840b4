"""iso-switch: an ISO 8583 payment switch.

Packages, from the bottom up (imports only point down this list; siblings
on one line do not import each other; ``lint-imports`` checks it, see
``[tool.importlinter]`` in pyproject.toml):

- ``codec``: spec-compiled ISO 8583 encode/decode, TLV and subfields (stdlib only)
- ``ledger`` / ``security`` / ``protocol`` / ``logs``: durable double-entry
  ledger with idempotency; PIN blocks, DUKPT, MACs, key store, the ``Hsm``
  interface; framing and sessions, sans-I/O; structured logging with masking
- ``issuer`` / ``acquirer`` / ``routing`` / ``trace`` / ``links``: the
  business rules; the message trace format (sealing, masking, lines); the
  links toward remote issuers as a state machine; all sans-I/O
- ``processor``: the decision for each request and its postings, sans-I/O
- ``config``: the switch's configuration (TOML, validated)
- ``bootstrap``: the key store and HSM a configuration names
- ``server`` / ``admin``: the trio TCP shell, the only package that imports
  trio; administrative actions (card import) shared by the CLI and tools
- ``cli``: the ``iso-switch`` command

``codes`` (response codes, transaction states and types) is a stdlib-only
leaf any package may import.
"""

__version__ = "0.1.0"
