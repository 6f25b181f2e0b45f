"""unreid.models."""
