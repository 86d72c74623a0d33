"""regularizers layer."""
