"""Workflows written the datashare-python way, for icij_nb's interop tests."""
