"""The in-memory mutual-TLS handshake: what two proxies would say to each other."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from meshpki import handshake
from meshpki.keys import KeyType
from tests import factories as f


def endpoint(name, ca, trust, trust_domain="cluster.local", chain=None):
    chain_pem = f.pem(*(chain if chain is not None else [ca]))
    ep, _leaf = handshake.workload_endpoint(name, ca.cert, ca.key, chain_pem, f.pem(*trust), trust_domain)
    return ep


@pytest.fixture(scope="module")
def mesh():
    root = f.make_root("Root CA", slot=80)
    return root, f.make_intermediate(root, "cluster1", slot=81), f.make_intermediate(root, "cluster2", slot=82)


@pytest.mark.parametrize("key_type", [KeyType.ECDSA_P256, KeyType.RSA_2048], ids=lambda k: k.value)
def test_same_root_handshake_ok(key_type):
    root = f.make_root("Root CA", key_type, slot=83)
    a = endpoint("cluster1", f.make_intermediate(root, "cluster1", key_type, slot=84), [root])
    b = endpoint("cluster2", f.make_intermediate(root, "cluster2", key_type, slot=85), [root])
    result = handshake.mutual_tls(a, b)
    assert result.ok, result.reason
    assert result.version in ("TLSv1.2", "TLSv1.3")
    assert result.alert is None and result.rejected_by is None


def test_different_roots_fail_with_unknown_ca(mesh):
    root, c1, _ = mesh
    other_root = f.make_root("Root CA", slot=86)
    stranger = f.make_intermediate(other_root, "cluster9", slot=87)
    result = handshake.mutual_tls(endpoint("cluster1", c1, [root]), endpoint("cluster9", stranger, [other_root]))
    assert not result.ok
    assert result.alert == "UNKNOWN_CA"
    assert result.rejected_by == "cluster1"  # the client judges the server's certificate first
    assert "cluster9" in result.reason and "UNKNOWN_CA" in result.reason


def test_server_rejecting_the_client_is_reported(mesh):
    """TLS 1.3: the client finishes before the server judges its certificate."""
    root, _c1, c2 = mesh
    other_root = f.make_root("Other", slot=88)
    # client trusts both roots, so it accepts the server; the server trusts only its own root
    client = endpoint("outsider", f.make_intermediate(other_root, "x", slot=89), [other_root, root])
    server = endpoint("cluster2", c2, [root])
    result = handshake.mutual_tls(client, server)
    assert not result.ok and result.rejected_by == "cluster2"
    assert result.alert == "UNKNOWN_CA"


def test_expired_peer_names_certificate_expired(mesh):
    root, c1, _ = mesh
    dead = f.make_intermediate(root, "old", slot=90, not_before=f.days_from_now(-10), not_after=f.days_from_now(-1))
    result = handshake.mutual_tls(endpoint("cluster1", c1, [root]), endpoint("old", dead, [root]))
    assert not result.ok and result.alert == "CERTIFICATE_EXPIRED"


def test_trust_domain_is_checked_after_the_handshake(mesh):
    root, c1, c2 = mesh
    result = handshake.mutual_tls(endpoint("cluster1", c1, [root]),
                                  endpoint("cluster2", c2, [root], trust_domain="other.example"))
    assert not result.ok
    assert result.alert is None and "trust domain" in result.reason


def test_chain_missing_the_intermediate_is_refused(mesh):
    root, c1, c2 = mesh
    result = handshake.mutual_tls(endpoint("cluster1", c1, [root]), endpoint("cluster2", c2, [root], chain=[]))
    assert not result.ok and result.alert == "UNKNOWN_CA"


def test_contexts_are_reused_and_no_key_file_is_left_behind(mesh, tmp_path, monkeypatch):
    # A temp folder of our own: other processes' handshakes must not show up here.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root, c1, c2 = mesh
    before = set(Path(tempfile.gettempdir()).glob("meshpki-tls-*"))
    a, b = endpoint("cluster1", c1, [root]), endpoint("cluster2", c2, [root])
    assert handshake.mutual_tls(a, b).ok and handshake.mutual_tls(b, a).ok
    ctx = a.context(server_side=False)
    assert handshake.mutual_tls(a, b).ok
    assert a.context(server_side=False) is ctx
    assert set(Path(tempfile.gettempdir()).glob("meshpki-tls-*")) == before


def test_unloadable_trust_is_a_result_not_an_exception(mesh):
    root, c1, c2 = mesh
    broken = handshake.Endpoint("broken", f.pem(c2), c2.key, b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    result = handshake.mutual_tls(endpoint("cluster1", c1, [root]), broken)
    assert not result.ok and "broken" in result.reason


def test_spiffe_trust_domain(mesh):
    root, c1, _ = mesh
    _ep, leaf = handshake.workload_endpoint("x", c1.cert, c1.key, f.pem(c1), f.pem(root), "mesh.example")
    assert handshake.spiffe_trust_domain(leaf) == "mesh.example"
    assert handshake.spiffe_trust_domain(root.cert) is None
