"""The TLS policy: verified with certifi plus an optional CA, TLS >= 1.2, insecure only on request."""

import ssl
import warnings

import certifi
import pytest
import trustme

from mailkit import ConfigError, InsecureWarning, create_ssl_context


def test_default_context_verifies_host_and_chain():
    context = create_ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_default_context_trusts_certifi_bundle():
    context = create_ssl_context()
    certifi_roots = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert context.cert_store_stats()["x509_ca"] >= certifi_roots > 0


def test_extra_ca_file_is_added(tmp_path):
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    plain = create_ssl_context().cert_store_stats()["x509_ca"]
    assert create_ssl_context(path).cert_store_stats()["x509_ca"] == plain + 1


def test_missing_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        create_ssl_context(tmp_path / "nope.pem")


def test_ca_file_without_certificates_is_a_config_error(tmp_path):
    path = tmp_path / "empty.pem"
    path.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no usable certificate"):
        create_ssl_context(path)


def test_insecure_only_on_request_and_warns():
    with pytest.warns(InsecureWarning, match="not verified"):
        context = create_ssl_context(allow_insecure=True)
    assert context.verify_mode is ssl.CERT_NONE
    assert context.check_hostname is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert create_ssl_context().verify_mode is ssl.CERT_REQUIRED
