"""unreid.models.backbones."""
