"""Methods: each a small class on the shared engine (DESIGN.md, "A method's contract")."""

from unreid.methods.base import METHODS, Method, StepOutput, build_method, register_method
from unreid.methods.cluster_contrast import ClusterContrast
from unreid.methods.hhcl import HHCL

__all__ = ["METHODS", "ClusterContrast", "HHCL", "Method", "StepOutput", "build_method", "register_method"]
