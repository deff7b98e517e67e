"""meshpki: one shared root of trust for a multi-cluster Istio mesh."""

__version__ = "0.1.0"
