"""Web application and REST API."""
