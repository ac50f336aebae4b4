"""TLS transport (a later issue); the only place that imports OpenSSL."""
