"""Data: dataset families, the synthetic generator, transforms, samplers and loaders."""
