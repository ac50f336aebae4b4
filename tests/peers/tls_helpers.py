"""What both Twisted TLS peer scripts need (twisted_transport_client/server.py)."""

from cryptography.x509.oid import NameOID
from twisted.internet.ssl import TLSVersion


def common_name(certificate):
    """The CN of an ``OpenSSL.crypto.X509`` (None when it has none)."""
    names = certificate.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def read(path):
    with open(path, "rb") as stream:
        return stream.read()
