"""Hostile servers and broken networks: tools (proxy, scripted servers, certificates) and their tests."""
