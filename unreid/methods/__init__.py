"""Methods: a small class per published method, plugged into the shared engine."""

from unreid.methods.base import METHODS, Method, StepOutput, build_method, register_method

__all__ = ["METHODS", "Method", "StepOutput", "build_method", "register_method"]
