"""The REST API under ``/api/v1``: JSON over the same services and views as the pages."""
