"""The gateway: OpenAI-compatible endpoints over a pool of experts, and the `coe` CLI."""
