"""Methods: each a small class on the shared engine (DESIGN.md, "A method's contract")."""

from unreid.methods.base import METHODS, Method, StepOutput, build_method, register_method
from unreid.methods.cluster_contrast import ClusterContrast
from unreid.methods.gcl import GCL
from unreid.methods.hhcl import HHCL
from unreid.methods.mbccm import MBCCM
from unreid.methods.tcl import TCL

__all__ = ["GCL", "METHODS", "MBCCM", "ClusterContrast", "HHCL", "Method", "StepOutput", "TCL", "build_method", "register_method"]
