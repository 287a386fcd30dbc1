"""domainwatch: a Prometheus exporter for domain registration, delegation and contact health."""

__version__ = "0.1.0"
