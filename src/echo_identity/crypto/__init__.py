"""Pure cryptographic helpers: no Flask, no database."""
