"""Key management: the envelope keyring, KEK providers, data keys, encrypted-column
declarations and online key rotation. Imports no domain; every domain imports it."""
