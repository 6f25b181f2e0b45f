"""unreid.engine."""
