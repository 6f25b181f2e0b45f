"""unreid.data.datasets."""
