"""The fronts: wire protocols in, core calls out. Each parses its requests, calls the core
(service/core/) and reports errors by the one status table (status.py). Nothing below imports
a front."""
