"""Privacy: a user's rights over their data (GDPR).

- :mod:`.export`: everything Echo holds about a user as one streamed JSON document (access and
  portability, Art. 15/20);
- :mod:`.erasure`: erasure by crypto-shredding, resumable step by step (Art. 17), with its
  record in :mod:`.models`;
- :mod:`.views`: ``/account/export`` and ``/account/delete``;
- consent withdrawal per application and per vault connection (Art. 7(3)).

docs/privacy.md lists the personal data Echo holds and how each right is served.
"""
