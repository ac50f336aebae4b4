"""syncpb.tls: TLS for syncpb, and certificates for it.

The only part of syncpb that imports OpenSSL (pyOpenSSL). Certificates are
made with ``cryptography`` alone (:mod:`syncpb.tls.certs`; ``python -m syncpb
tls init DIR --host NAME`` writes a development set).
"""

from .context import ClientTLS, ServerTLS, Source, client_context, server_context
from .engine import PeerCertificate, TLSEngine
from .login import ClientCertificateChecker

# Certificates (cryptography only).
from .certs import (DEV_SET_FILES, Identity, check_common_name, check_host, common_name,
                    fingerprint_sha256, load_identity, make_ca, make_client_cert,
                    make_server_cert, subject_alt_names, write_dev_set)

__all__ = [
    # contexts and the sans-IO engine
    "server_context", "client_context", "ServerTLS", "ClientTLS", "Source",
    "TLSEngine", "PeerCertificate", "ClientCertificateChecker",
    # certificates
    "DEV_SET_FILES", "Identity", "check_common_name", "check_host", "common_name",
    "fingerprint_sha256", "load_identity", "make_ca", "make_client_cert", "make_server_cert",
    "subject_alt_names", "write_dev_set",
]
