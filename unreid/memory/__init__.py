"""unreid.memory."""
