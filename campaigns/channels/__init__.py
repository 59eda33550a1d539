"""Channel transports: one module per channel behind ``base.Transport`` (see there)."""
