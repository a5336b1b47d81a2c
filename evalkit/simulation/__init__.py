"""Simulation: the client simulator and the session engine."""
