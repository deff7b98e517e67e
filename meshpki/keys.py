"""Key types, key generation, and private keys in and out of PEM.

The root key is the one secret that must never leak, so at rest it is PKCS#8
encrypted with scrypt (PBES2, AES-256-CBC): cryptography's own
`BestAvailableEncryption` uses PBKDF2 with 2,048 iterations, far too cheap
for an offline guessing attack. cryptography reads scrypt-encrypted PKCS#8
natively; we only have to write it, which pyasn1 does for us.
"""

from __future__ import annotations

import ctypes
import enum
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Protocol

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshpki.errors import BundleError, InputError, PassphraseError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
# A CA's subject key: ours when we generate it, a CSR's when a site made it (byo.py).
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class HasPublicKey(Protocol):
    """A private key in memory or in a token: either can show its public half."""

    def public_key(self) -> PublicKey: ...

# scrypt cost for the root key: N=2^17, r=8, p=1 is OWASP's recommendation
# (128 MiB of memory, about 0.6 s here). The parameters travel inside the
# PKCS#8 structure, so a later change never breaks reading an older key.
SCRYPT_LOG2_N = 17
SCRYPT_R = 8
SCRYPT_P = 1
# PBKDF2-HMAC-SHA256 rounds for an exported root key: OWASP's 2023 figure (600,000).
PBKDF2_ITERATIONS = 600_000


class KeyType(enum.StrEnum):
    """The key types meshpki makes; each knows how to generate its key."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")

    def generate(self) -> PrivateKey:
        if self.is_rsa:
            return rsa.generate_private_key(public_exponent=65537, key_size=int(self.value[4:]))
        curve = ec.SECP256R1() if self is KeyType.ECDSA_P256 else ec.SECP384R1()
        return ec.generate_private_key(curve)

    @classmethod
    def parse(cls, text: str) -> KeyType:
        try:
            return cls(text.lower())
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise InputError(f"unknown key type {text!r}; choose one of {choices}") from None


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-256, except SHA-384 for P-384 keys (matching strength, RFC 5480).

    Takes the public half too: a key in a token is known by its public key."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _worker_start(parent_pid: int) -> None:
    """First thing a key worker does: never outlive meshpki, never print a Ctrl-C.

    SIGINT is ignored from birth (it is ignored while the worker is forked):
    the terminal sends Ctrl-C to the whole process group, and the parent alone
    decides what an interrupt means; it kills its workers. PR_SET_PDEATHSIG
    makes the kernel kill a worker whose parent was SIGKILLed (workers were
    seen outliving a killed parent). The parent's PID is passed in, not
    assumed to differ from 1: meshpki may itself be PID 1 in a container.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _generate_der(key_type: KeyType) -> bytes:
    key = key_type.generate()
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _worker(conn: Connection, parent_pid: int) -> None:
    """Make one key per job received, until told to stop (None) or killed."""
    _worker_start(parent_pid)
    try:
        while (job := conn.recv()) is not None:
            index, key_type = job
            conn.send((index, _generate_der(KeyType(key_type))))
    except BaseException:  # the parent went away or killed us: leave quietly, no traceback
        os._exit(1)


class KeyMaker:
    """Keys made in worker processes while the caller does other work.

        with KeyMaker([KeyType.RSA_4096] * 6) as maker:
            issuer = unlock_root()            # scrypt runs while the workers make keys
            for index, key in maker:          # in the order they finish
                ...

    RSA-4096 generation takes about a second of pure CPU, so N clusters on a
    2-core machine go twice as fast in parallel. Each worker has its own pipe
    and the parent hands out jobs (two queued per worker, so none idles while
    the parent signs): no shared queue lock that a killed worker could leave
    held, so leaving the block early (an error, Ctrl-C) kills the workers at
    once and never waits on them. Keys cross the process boundary as DER and
    are loaded without re-validation: we just made them, and validating an
    RSA-4096 key costs another 0.25 s. Once no job is left to hand out, an idle
    worker races a busy one for the key it is making (`_race`), so no core
    idles through a slow last key.
    """

    QUEUED_PER_WORKER = 2

    def __init__(self, key_types: Sequence[KeyType], progress: Callable[[int, int], None] | None = None) -> None:
        self.key_types = list(key_types)
        self.progress = progress
        slow = sum(1 for k in self.key_types if k.is_rsa and k is not KeyType.RSA_2048)
        self.workers = min(os.cpu_count() or 1, len(self.key_types)) if slow >= 2 else 1
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._busy: dict[Connection, int] = {}  # keys each worker has been asked for and not delivered
        self._waiting: dict[int, int] = {}  # keys not delivered yet -> how many workers are making each
        self._jobs: Iterator[tuple[int, KeyType]] = iter(())  # keys no worker has been asked for yet

    def __enter__(self) -> KeyMaker:
        if self.workers < 2:
            return self
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # workers are born ignoring Ctrl-C
        try:
            for _ in range(self.workers):
                parent_end, child_end = context.Pipe()
                proc = context.Process(target=_worker, args=(child_end, os.getpid()), daemon=True)
                proc.start()
                child_end.close()
                self._procs.append(proc)
                self._conns.append(parent_end)
            # Jobs go out now, not at the first next(): the caller's own work (the
            # root's scrypt unlock) runs while the workers already make keys.
            self._jobs = iter(list(enumerate(self.key_types)))
            self._waiting = {index: 0 for index in range(len(self.key_types))}
            self._busy = {conn: self._hand_out(conn, self._jobs, self.QUEUED_PER_WORKER, self._waiting)
                          for conn in self._conns}
        except BaseException:
            self._stop(kill=True)
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
        return self

    def __iter__(self) -> Iterator[tuple[int, PrivateKey]]:
        total = len(self.key_types)
        if not self._conns:
            for index, key_type in enumerate(self.key_types):
                key = key_type.generate()
                if self.progress:
                    self.progress(index + 1, total)
                yield index, key
            return
        jobs, busy, waiting = self._jobs, self._busy, self._waiting
        done = 0
        while True:
            for ready in multiprocessing.connection.wait([c for c, n in busy.items() if n]):
                assert isinstance(ready, Connection)
                try:
                    index, der = ready.recv()
                except EOFError:
                    raise KeyGenerationError("a key-generation worker died; run the command again") from None
                busy[ready] -= 1
                first = waiting.pop(index, None) is not None
                sent = self._hand_out(ready, jobs, 1, waiting)
                if not sent and not busy[ready]:
                    sent = self._race(ready, waiting)
                busy[ready] += sent
                if not first:
                    continue  # another worker made this key first
                loaded = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
                assert isinstance(loaded, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))  # we generated it
                done += 1
                if self.progress:
                    self.progress(done, total)
                if done == total:
                    self._stop(kill=False)  # a worker still racing for a key already delivered is killed now
                    yield index, loaded
                    return
                yield index, loaded

    def _hand_out(self, conn: Connection, jobs: Iterator[tuple[int, KeyType]], count: int,
                  waiting: dict[int, int]) -> int:
        sent = 0
        for index, key_type in jobs:
            conn.send((index, key_type.value))
            waiting[index] += 1
            sent += 1
            if sent == count:
                break
        return sent

    def _race(self, conn: Connection, waiting: dict[int, int]) -> int:
        """Give an idle worker (no job left to hand out) a key another worker is
        still making: the first of the two delivered is used, the other dropped.

        RSA key generation searches for primes at random, so one key may take
        several times another's time; without this, one core sat idle for the
        whole tail while the last worker finished (bench/bench_cores.py). Both
        copies are fresh keys from the OS's random source made for that cluster
        alone; the one not used never leaves its worker, which is killed."""
        if not waiting:
            return 0
        index = min(waiting, key=lambda i: (waiting[i], -i))  # fewest copies; the last queued may not have started
        conn.send((index, self.key_types[index].value))
        waiting[index] += 1
        return 1

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._stop(kill=exc_type is not None)

    def _stop(self, kill: bool) -> None:
        """Finished: workers are told to stop. Interrupted or failed: killed, not awaited."""
        for conn, proc in zip(self._conns, self._procs, strict=False):
            if kill or self._busy.get(conn):  # still making a key nobody will take
                proc.kill()
            else:
                try:
                    conn.send(None)
                except OSError:
                    proc.kill()
        for proc in self._procs:
            proc.join(timeout=None if kill else 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns, self._busy = [], [], {}


class KeyGenerationError(BundleError):
    """A worker process died before delivering its key."""


def generate_many(
    key_types: Sequence[KeyType], progress: Callable[[int, int], None] | None = None
) -> list[PrivateKey]:
    """Generate several keys (in parallel processes when that pays off), in order."""
    made: dict[int, PrivateKey] = {}
    with KeyMaker(key_types, progress) as maker:
        for index, key in maker:
            made[index] = key
    return [made[i] for i in range(len(key_types))]


def to_pem(key: PrivateKey) -> bytes:
    """Plain PKCS#8 PEM: what istiod reads from ca-key.pem (it cannot decrypt)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def to_encrypted_pem(key: PrivateKey, passphrase: bytes, log2_n: int = SCRYPT_LOG2_N) -> bytes:
    """PKCS#8 EncryptedPrivateKeyInfo with PBES2(scrypt, AES-256-CBC), as PEM.

    Same structure `openssl pkcs8 -topk8 -scrypt` writes (RFC 8018, RFC 7914),
    so both OpenSSL and cryptography read it back.
    """
    from pyasn1_alt_modules import rfc7914

    salt = os.urandom(16)
    derived = Scrypt(salt=salt, length=32, n=2**log2_n, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)
    params = rfc7914.Scrypt_params()
    params["salt"] = salt
    params["costParameter"] = 2**log2_n
    params["blockSize"] = SCRYPT_R
    params["parallelizationParameter"] = SCRYPT_P
    return _pbes2_pem(key, rfc7914.id_scrypt, params, derived)


def to_portable_encrypted_pem(key: PrivateKey, passphrase: bytes, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """PKCS#8 with PBES2(PBKDF2-HMAC-SHA256, AES-256-CBC): what `openssl pkey
    -passin` opens everywhere (OpenSSL caps scrypt's memory, not PBKDF2's rounds).

    For export-root-key: disaster recovery and migration to other tools.
    """
    from pyasn1.type import univ
    from pyasn1_alt_modules import rfc8018

    salt = os.urandom(16)
    derived = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations).derive(passphrase)
    params = rfc8018.PBKDF2_params()
    params["salt"]["specified"] = univ.OctetString(salt)
    params["iterationCount"] = iterations
    params["keyLength"] = 32
    params["prf"]["algorithm"] = rfc8018.id_hmacWithSHA256
    params["prf"]["parameters"] = univ.Null("")
    return _pbes2_pem(key, rfc8018.id_PBKDF2, params, derived)


def _pbes2_pem(key: PrivateKey, kdf_oid: object, kdf_params: object, derived: bytes) -> bytes:
    """The PBES2 envelope both KDFs share: AES-256-CBC over the PKCS#8 DER (RFC 8018 6.2)."""
    from pyasn1.codec.der import encoder
    from pyasn1.type import univ
    from pyasn1_alt_modules import rfc3565, rfc5208, rfc8018

    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )) + padder.finalize()
    encryptor = Cipher(algorithms.AES(derived), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()

    kdf = rfc8018.AlgorithmIdentifier()
    kdf["algorithm"] = kdf_oid
    kdf["parameters"] = kdf_params
    cipher = rfc8018.AlgorithmIdentifier()
    cipher["algorithm"] = rfc3565.id_aes256_CBC
    cipher["parameters"] = univ.OctetString(iv)
    pbes2 = rfc8018.PBES2_params()
    pbes2["keyDerivationFunc"] = kdf
    pbes2["encryptionScheme"] = cipher
    info = rfc5208.EncryptedPrivateKeyInfo()
    info["encryptionAlgorithm"]["algorithm"] = rfc8018.id_PBES2
    info["encryptionAlgorithm"]["parameters"] = pbes2
    info["encryptedData"] = ciphertext
    der = encoder.encode(info)
    return pem_armor(der, "ENCRYPTED PRIVATE KEY")


def pem_armor(der: bytes, label: str) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def is_encrypted_pem(pem: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


def load_private_key(pem: bytes, passphrase: bytes | None = None, what: str = "private key") -> PrivateKey:
    """Read a PEM private key; every failure becomes one line naming `what`."""
    encrypted = is_encrypted_pem(pem)
    if encrypted and not passphrase:
        raise PassphraseError(
            f"{what} is encrypted; set MESHPKI_ROOT_PASSPHRASE, pass --passphrase-file, or run on a terminal"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise PassphraseError(f"{what}: wrong passphrase (or a damaged key file)") from None
        raise BundleError(f"{what} is not a readable PEM private key ({first_line(exc)})") from None
    except Exception as exc:  # cryptography raises several types for garbage input
        raise BundleError(f"{what} is not a readable PEM private key ({first_line(exc)})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise BundleError(f"{what} is a {type(key).__name__}; meshpki supports RSA and ECDSA keys")
    return key


def first_line(exc: BaseException) -> str:
    """An exception's first line, for one-line error messages."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def public_keys_match(key: HasPublicKey, cert_public_key: object) -> bool:
    """True when the private key belongs to the certificate's public key."""
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        theirs = cert_public_key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:
        return False
    return mine == theirs
