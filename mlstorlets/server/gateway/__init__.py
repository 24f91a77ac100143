"""Storlet gateways of mlstorlets: ways to run the upstream storlet agent."""
