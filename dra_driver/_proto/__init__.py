"""Generated gRPC stubs of the kubelet DRA, plugin-registration and DRA health APIs."""
