"""Experts: the pool file, how each expert runs (engines), and the OpenAI-compatible client."""
