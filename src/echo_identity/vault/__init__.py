"""Token vault: envelope-encrypted secrets at rest, third-party OAuth connections."""
