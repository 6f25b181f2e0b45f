"""unreid.evaluation."""
