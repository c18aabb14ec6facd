"""Layer 4: one nightly scoring DAG per YAML config file."""
