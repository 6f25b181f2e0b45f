"""unreid: object re-identification without identity labels.

Cluster Contrast, HHCL, TCL, MBCCM and GCL on one engine (data, model, pseudo-labelling,
trainer, evaluation). See README.md and docs/.
"""

__version__ = "0.1.0"
