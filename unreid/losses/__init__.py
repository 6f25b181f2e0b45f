"""unreid.losses."""
