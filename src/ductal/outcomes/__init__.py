"""Response classification and endpoint derivation: database to analysis dataset."""
