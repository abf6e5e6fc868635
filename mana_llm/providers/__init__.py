"""One module per upstream wire protocol, behind the Provider protocol."""
