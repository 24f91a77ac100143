"""What runs in Swift's servers and manages them: the proxy and object
middleware, the storlets gateway, node configuration and the embedded
cluster.
"""
