"""A local kubelet stand-in for trying and testing device plugins without a cluster."""

from kubelet_standin.kubelet import KubeletStandIn, PluginEndpoint

__all__ = ["KubeletStandIn", "PluginEndpoint"]
