"""Report sections computed from score arrays (numpy in, dicts and printable lines out)."""
