"""Sources: connectors that bring records into Tessera through the gateway's path."""
