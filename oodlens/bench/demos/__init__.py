"""Built-in demo benchmarks run by ``oodlens demo``."""
