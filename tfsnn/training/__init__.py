"""Training procedures (what is a procedure rather than a layer)."""
