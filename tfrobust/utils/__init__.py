"""Small shared helpers: argument and data validation."""
