"""Dataset plugins: one thin module per dataset (import their classes by class_path)."""
