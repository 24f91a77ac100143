"""Putting mlstorlets on a Swift cluster: node configuration and storlets."""
