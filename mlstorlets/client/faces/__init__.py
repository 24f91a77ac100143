"""The face pipeline as the client drives it: extract, train, recognize."""
