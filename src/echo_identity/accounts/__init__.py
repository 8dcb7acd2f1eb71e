"""Users, password hashing, server-side browser sessions, login and logout."""
