"""Cross-cutting HTTP concerns: request ids, security headers, CSRF, errors, health checks."""
