"""Runs the VaultPay mesh on one machine as plain processes (no containers).

`make run` and the test suite both start the mesh through this package, so what a developer
runs is what the end-to-end tests exercise.
"""
