"""Fuzz targets and the atheris runner (``make fuzz``); see docs/SECURITY.md."""
