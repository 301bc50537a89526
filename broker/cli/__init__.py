"""The `llama-broker` command line."""
