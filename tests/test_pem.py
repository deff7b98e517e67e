"""PEM reading: Go's block rules, and one explicit policy per kind of file."""

from __future__ import annotations

import pytest

from meshpki import pem
from meshpki.errors import BundleError
from tests import factories as f

A, B = f.make_root("Root A", slot=130), f.make_root("Root B", slot=131)
DAMAGED = b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
FOREIGN = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"  # base64, but not a certificate


def test_decode_skips_text_and_damaged_blocks_like_go():
    decoded = pem.decode(b"hello\n" + f.pem(A) + DAMAGED + b"junk" + f.pem(B))
    assert [b.label for b in decoded.blocks] == ["CERTIFICATE", "CERTIFICATE"] and decoded.damaged == 1


def test_skip_policy_keeps_the_good_certificates_and_says_what_it_skipped():
    result = pem.read_certs(f.pem(A) + FOREIGN + f.pem(B), pem.Policy.SKIP)
    assert result.ok and list(result.certs) == [A.cert, B.cert]
    assert len(result.skipped) == 1 and "block 2" in result.skipped[0]


def test_every_policy_refuses_the_first_bad_block():
    result = pem.read_certs(f.pem(A) + FOREIGN, pem.Policy.EVERY)
    assert not result.ok and "block 2 is not a valid certificate" in result.error


def test_first_policy_reads_only_the_first_block():
    result = pem.read_certs(f.pem(A) + FOREIGN, pem.Policy.FIRST)
    assert result.ok and list(result.certs) == [A.cert] and not result.skipped


def test_the_same_file_read_again_gives_the_same_answer_under_each_policy():
    """read_certs answers a file it read before from memory: same bytes, same answer, per policy."""
    data = f.pem(A) + FOREIGN + f.pem(B)
    for policy in pem.Policy:
        first = pem.read_certs(data, policy)
        assert pem.read_certs(bytes(data), policy) == first == pem.read_certs(bytearray(data), policy)
    assert pem.read_certs(data, pem.Policy.FIRST) != pem.read_certs(data, pem.Policy.SKIP)


@pytest.mark.parametrize("data", [b"", b"nothing here", DAMAGED, A.key_pem])
def test_a_file_without_certificates_is_unusable_under_every_policy(data):
    for policy in pem.Policy:
        assert not pem.read_certs(data, policy).ok


def test_certificates_raises_one_line_naming_the_file():
    with pytest.raises(BundleError, match=r"root-cert\.pem holds no PEM certificate"):
        pem.certificates(b"junk", "root-cert.pem")
    with pytest.raises(BundleError, match=r"root-cert\.pem: block 2"):
        pem.certificates(f.pem(A) + FOREIGN, "root-cert.pem")


def test_a_single_object_file_holds_one_intact_block_and_nothing_more():
    key = A.key_pem
    assert pem.lone_block_problem(key, "private key") is None
    assert pem.lone_block_problem(b"a comment\n" + key + b"\n", "private key") is None  # text outside blocks: Go's rule
    assert pem.lone_block_problem(key + FOREIGN, "private key") == \
        "holds 2 PEM blocks, not one private key (block 2 is a CERTIFICATE)"
    assert pem.lone_block_problem(key + DAMAGED, "private key") == \
        "holds 1 damaged PEM block(s) beside the private key"
    assert pem.lone_block_problem(DAMAGED, "private key") is None  # nothing intact: the parser's to refuse
