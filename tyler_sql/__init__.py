"""Placeholder: this backend has not landed yet and registers no URL scheme."""
