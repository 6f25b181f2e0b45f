"""unreid.data."""
