"""One-attribute trainer variants, grouped by what they change."""
