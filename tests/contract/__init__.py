"""Checks on the protobuf contract: access rules, HTTP routes, API.md, stubs and buf."""
