"""iso-switch: an ISO 8583 payment switch.

Packages, from the bottom up (imports only point down this list):

- ``codec``: spec-compiled ISO 8583 encode/decode, TLV and subfields (stdlib only)
- ``protocol``: framing and sessions, sans-I/O
- ``security``: PIN blocks, DUKPT, MACs, key store, the ``Hsm`` interface
- ``ledger``: durable double-entry ledger with idempotency
- ``issuer`` / ``acquirer`` / ``routing`` / ``processor``: the business rules
- ``server``: the trio TCP shell, the only package that imports trio
- ``cli``: the ``iso-switch`` command
"""

__version__ = "0.1.0"
