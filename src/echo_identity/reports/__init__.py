"""Security reports: one typed report from queries each domain owns, rendered as JSON or HTML."""
