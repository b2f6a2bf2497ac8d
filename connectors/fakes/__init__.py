"""Loopback fakes of each built-in connector's vendor (see ``connectors.sdk.fakes``)."""
