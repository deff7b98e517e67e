"""A CA key that lives inside a PKCS#11 token and never leaves it.

The store records the key's RFC 7512 URI instead of a key file; this module
turns such a URI (plus the module and the PIN) into a `TokenKey` that
signs through the token. It is imported only when a PKCS#11 root is used,
and only it imports python-pkcs11 (the optional extra `meshpki[hsm]`), so
users of a file root pay nothing at start-up. README "Root key in an HSM"
shows the workflow with SoftHSM2.

Why python-pkcs11 and not PyKCS11: it maps each CKR_* return value to its
own exception (PinIncorrect, NoSuchToken, MechanismInvalid ...), which is
exactly what one clear error line per failure needs; it ships typed
(py.typed) manylinux wheels; and its object API (token, session, key) is a
third of the code PyKCS11's thin C mirror would take.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meshpki.credentials import PIN_ENV
from meshpki.errors import InputError, MeshPKIError, PassphraseError

if TYPE_CHECKING:
    from meshpki.keys import KeyType

MODULE_ENV = "MESHPKI_PKCS11_MODULE"
URI_SCHEME = "pkcs11:"

# RFC 7512 section 2.3: the attributes meshpki understands. Token selection,
# key selection, and the module; anything else is refused so a typo
# (`tokn=`) never silently matches the wrong token.
_PATH_ATTRS = ("token", "manufacturer", "model", "serial", "slot-id", "object", "id", "type")
_QUERY_ATTRS = ("module-path", "pin-source")

# What DER-encoded EC_PARAMS (a named-curve OID) means, for the two curves meshpki uses.
_CURVES: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("06052b81040022"): ec.SECP384R1(),
}
_CURVE_PARAMS = {"secp256r1": bytes.fromhex("06082a8648ce3d030107"), "secp384r1": bytes.fromhex("06052b81040022")}

# PKCS#1 v1.5 DigestInfo prefixes (RFC 8017 section 9.2, note 1), for tokens that
# sign with plain CKM_RSA_PKCS instead of CKM_SHA256_RSA_PKCS.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
}


class TokenError(MeshPKIError):
    """The token, its module or its key cannot do what was asked."""


class PinError(PassphraseError):
    """No PIN, or a PIN the token refused."""


@dataclass(frozen=True)
class TokenURI:
    """A parsed RFC 7512 URI naming one private key in one token."""

    token: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    module_path: str | None = None
    pin_source: str | None = None

    @classmethod
    def parse(cls, text: str) -> TokenURI:
        """Parse and validate; every refusal is one line naming the attribute."""
        text = text.strip()
        if not text.lower().startswith(URI_SCHEME):
            raise InputError(f"{text!r} is not a PKCS#11 URI; write it like 'pkcs11:token=meshpki;object=mesh-root'")
        path, _, query = text[len(URI_SCHEME):].partition("?")
        values: dict[str, bytes] = {}
        for part, known, sep in ((path, _PATH_ATTRS, ";"), (query, _QUERY_ATTRS, "&")):
            for item in filter(None, part.split(sep)):
                name, eq, raw = item.partition("=")
                name = name.lower()
                if name == "pin-value":
                    raise InputError("a PIN never goes into the URI (it would end up in the store and in shell history); "
                                     f"set {PIN_ENV} or pass --pin-file")
                if not eq or name not in known:
                    raise InputError(f"PKCS#11 URI attribute {name!r} is not supported; meshpki understands "
                                     f"{', '.join(_PATH_ATTRS + _QUERY_ATTRS)}")
                if name in values:
                    raise InputError(f"PKCS#11 URI names {name!r} twice")
                values[name] = urllib.parse.unquote_to_bytes(raw)
        kind = values.pop("type", b"private").decode()
        if kind != "private":
            raise InputError(f"PKCS#11 URI says type={kind}; the root key is a private key (type=private or no type)")

        def text_of(name: str) -> str | None:
            value = values.get(name)
            return value.decode("utf-8", "replace") if value is not None else None

        slot = text_of("slot-id")
        if slot is not None and not slot.isdigit():
            raise InputError(f"PKCS#11 URI slot-id must be a number, not {slot!r}")
        uri = cls(token=text_of("token"), manufacturer=text_of("manufacturer"), model=text_of("model"),
                  serial=text_of("serial"), slot_id=int(slot) if slot is not None else None,
                  object=text_of("object"), id=values.get("id"), module_path=text_of("module-path"),
                  pin_source=text_of("pin-source"))
        if uri.object is None and uri.id is None:
            raise InputError("the PKCS#11 URI must name the key: add object=LABEL (and/or id=%01...)")
        return uri

    def __str__(self) -> str:
        """The canonical form the store records (RFC 7512 percent-encoding)."""
        def enc(value: str | bytes) -> str:
            return urllib.parse.quote(value, safe="-._~:[]@!$'()*+,") if isinstance(value, str) \
                else "".join(f"%{b:02x}" for b in value)

        path = [(k, v) for k, v in (("token", self.token), ("manufacturer", self.manufacturer),
                                    ("model", self.model), ("serial", self.serial),
                                    ("slot-id", None if self.slot_id is None else str(self.slot_id)),
                                    ("object", self.object), ("id", self.id)) if v is not None]
        query = [(k, v) for k, v in (("module-path", self.module_path), ("pin-source", self.pin_source))
                 if v is not None]
        text = URI_SCHEME + ";".join(f"{k}={enc(v)}" for k, v in path) + ";type=private"
        if query:
            text += "?" + "&".join(f"{k}={urllib.parse.quote(v, safe='/-._~:')}" for k, v in query)
        return text

    def describe_key(self) -> str:
        parts = [f"object {self.object!r}" if self.object is not None else "",
                 f"id {self.id.hex()}" if self.id is not None else ""]
        return " with ".join(p for p in parts if p)

    def describe_token(self) -> str:
        chosen = [f"{k}={v}" for k, v in (("token", self.token), ("serial", self.serial),
                                          ("slot-id", self.slot_id), ("manufacturer", self.manufacturer),
                                          ("model", self.model)) if v is not None]
        return ", ".join(chosen) or "any token"

    def module(self, environ: Any = os.environ) -> str:
        """The module to load: the URI's module-path, else $MESHPKI_PKCS11_MODULE."""
        found = self.module_path or environ.get(MODULE_ENV)
        if not found:
            raise TokenError(f"no PKCS#11 module named: set {MODULE_ENV} (e.g. /usr/lib/softhsm/libsofthsm2.so) "
                             "or add ?module-path=... to the URI")
        return found


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise TokenError("a PKCS#11 root needs python-pkcs11: pip install 'meshpki[hsm]'") from None
    return pkcs11


def _load_module(path: str) -> Any:
    pkcs11 = _pkcs11()
    if not os.path.isfile(path):
        raise TokenError(f"PKCS#11 module {path} not found; install it or fix {MODULE_ENV} / module-path")
    try:
        return pkcs11.lib(path)
    except pkcs11.PKCS11Error as exc:
        detail = str(exc).strip().rsplit(": ", 1)[-1] or type(exc).__name__
        raise TokenError(f"{path} is not a PKCS#11 module ({detail}); check {MODULE_ENV} / module-path") from None


def _find_token(lib: Any, uri: TokenURI) -> Any:
    """The one token the URI selects; none or several is an error naming the candidates."""
    matches, seen = [], []
    for slot in lib.get_slots(token_present=True):
        token = slot.get_token()
        seen.append(token.label)
        serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else str(token.serial)
        if ((uri.token is None or token.label == uri.token) and (uri.serial is None or serial == uri.serial)
                and (uri.slot_id is None or slot.slot_id == uri.slot_id)
                and (uri.manufacturer is None or token.manufacturer_id == uri.manufacturer)
                and (uri.model is None or token.model == uri.model)):
            matches.append(token)
    if not matches:
        known = ", ".join(repr(s) for s in seen) or "none"
        raise TokenError(f"no PKCS#11 token matches {uri.describe_token()} (tokens present: {known})")
    if len(matches) > 1:
        raise TokenError(f"{len(matches)} PKCS#11 tokens match {uri.describe_token()}; "
                         "add serial= or slot-id= to the URI")
    return matches[0]


def _open(uri: TokenURI, pin: bytes, rw: bool) -> tuple[Any, Any]:
    pkcs11 = _pkcs11()
    module = uri.module()
    token = _find_token(_load_module(module), uri)
    try:
        session = token.open(rw=rw, user_pin=pin.decode("utf-8"))
    except pkcs11.UserAlreadyLoggedIn:
        # another key of this process is open on the same token, whose one user
        # PIN is therefore proven already: a plain session shares that login
        session = token.open(rw=rw)
    except pkcs11.PinIncorrect:
        raise PinError(f"token {token.label!r} refused the PIN (wrong PIN); check {PIN_ENV} or --pin-file") from None
    except pkcs11.PinLocked:
        raise PinError(f"token {token.label!r}: the user PIN is locked; the token's security officer must reset it") from None
    except (pkcs11.PinLenRange, UnicodeDecodeError):
        raise PinError(f"token {token.label!r} refused the PIN (wrong length or characters); "
                       f"check {PIN_ENV} or --pin-file") from None
    except pkcs11.PKCS11Error as exc:
        raise TokenError(f"cannot open token {token.label!r}: {type(exc).__name__}") from None
    return token, session


def _matching_objects(session: Any, uri: TokenURI, object_class: Any = None) -> list[Any]:
    from pkcs11 import Attribute

    template: dict[Any, Any] = {}
    if object_class is not None:
        template[Attribute.CLASS] = object_class
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return list(session.get_objects(template))


def _public_key_of(session: Any, private: Any, uri: TokenURI) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The key pair's public half as a cryptography object: from the public key
    object, or (RSA) the private object's public attributes."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    if private.key_type == KeyType.RSA:
        n = int.from_bytes(private[Attribute.MODULUS], "big")
        e = int.from_bytes(private[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if private.key_type != KeyType.EC:
        raise TokenError(f"the token key {uri.describe_key()} is a {private.key_type.name} key; "
                         "meshpki signs with RSA and ECDSA keys")
    publics = _matching_objects(session, TokenURI(object=uri.object, id=private[Attribute.ID] or uri.id),
                                ObjectClass.PUBLIC_KEY)
    if len(publics) != 1:
        raise TokenError(f"token holds {len(publics)} public keys for {uri.describe_key()}; "
                         "meshpki needs exactly the key pair's public half beside the private key")
    curve = _CURVES.get(bytes(private[Attribute.EC_PARAMS]))
    if curve is None:
        raise TokenError(f"the token key {uri.describe_key()} uses a curve meshpki does not sign with (P-256, P-384)")
    point = bytes(publics[0][Attribute.EC_POINT])
    size = 1 + 2 * ((curve.key_size + 7) // 8)
    if len(point) != size:  # most tokens wrap the point in a DER OCTET STRING (PKCS#11 2.40)
        point = point[-size:]
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


@dataclass(eq=False)
class TokenKey:
    """A private key that stays in its token: it signs, and shows its public half.

    Satisfies signing.ExternalKey, so profiles.py and the CRL code sign with it
    exactly as with a key from a file.
    """

    uri: TokenURI
    label: str
    _session: Any = field(repr=False)
    _private: Any = field(repr=False)
    _public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = field(repr=False)
    _mechanisms: frozenset[Any] = field(repr=False, default=frozenset())

    def __post_init__(self) -> None:
        weakref.finalize(self, _close_in, os.getpid(), self._session)

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        return self._public

    def private_attribute(self, name: str) -> Any:
        """One attribute of the private key object (tests check SENSITIVE, EXTRACTABLE ...)."""
        from pkcs11 import Attribute

        return self._private[Attribute[name]]

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """An X.509 signature over `data`: DER ECDSA-Sig-Value, or PKCS#1 v1.5 bytes.

        The digest is computed here and only the digest goes to the token
        (CKM_ECDSA takes a hash; few tokens offer CKM_ECDSA_SHA384).
        """
        pkcs11 = _pkcs11()
        from pkcs11 import Mechanism

        digest = hashes.Hash(algorithm)
        digest.update(data)
        hashed = digest.finalize()
        try:
            if isinstance(self._public, ec.EllipticCurvePublicKey):
                raw = self._private.sign(hashed, mechanism=Mechanism.ECDSA)
                half = len(raw) // 2  # PKCS#11 returns r || s; X.509 wants the DER sequence
                return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
            combined = Mechanism.SHA384_RSA_PKCS if algorithm.name == "sha384" else Mechanism.SHA256_RSA_PKCS
            if combined in self._mechanisms:
                return bytes(self._private.sign(data, mechanism=combined))
            return bytes(self._private.sign(_DIGEST_INFO[algorithm.name] + hashed, mechanism=Mechanism.RSA_PKCS))
        except pkcs11.PKCS11Error as exc:
            raise TokenError(f"token {self.label!r} could not sign with {self.uri.describe_key()} "
                             f"({type(exc).__name__}); is the token still present?") from None


@contextlib.contextmanager
def _closed_on_error(session: Any, failure: str) -> Iterator[None]:
    """Close the session when anything fails; a PKCS#11 error becomes one line."""
    pkcs11 = _pkcs11()
    try:
        yield
    except pkcs11.PKCS11Error as exc:
        _close_quietly(session)
        raise TokenError(f"{failure} ({type(exc).__name__})") from None
    except BaseException:
        _close_quietly(session)
        raise


def _close_in(owner_pid: int, session: Any) -> None:
    """Close at exit, but only in the process that opened the session: a forked
    key-generation worker must not end its parent's session (with a network
    HSM the handle is the server's, shared by both)."""
    if os.getpid() == owner_pid:
        _close_quietly(session)


def _close_quietly(session: Any) -> None:
    with contextlib.suppress(Exception):  # the module may already be finalised at interpreter exit
        session.close()


def read_pin(uri: TokenURI, pin: bytes | None) -> bytes:
    """The PIN given by the caller, else the URI's pin-source file."""
    if pin:
        return pin
    if uri.pin_source:
        source = uri.pin_source.removeprefix("file:")
        try:
            lines = open(source, "rb").read().splitlines()  # noqa: SIM115  (closed by refcount at once)
        except OSError as exc:
            raise PinError(f"cannot read the URI's pin-source {source}: {exc.strerror or exc}") from None
        if lines and lines[0]:
            return lines[0]
        raise PinError(f"the URI's pin-source {source} is empty")
    raise PinError(f"the root key is in a PKCS#11 token: set {PIN_ENV}, pass --pin-file, or run on a terminal")


def open_key(uri: TokenURI, pin: bytes | None) -> TokenKey:
    """Log in and find the private key the URI names (exactly one)."""
    _pkcs11()
    from pkcs11 import ObjectClass

    token, session = _open(uri, read_pin(uri, pin), rw=False)
    with _closed_on_error(session, f"token {token.label!r}: cannot read {uri.describe_key()}"):
        found = _matching_objects(session, uri, ObjectClass.PRIVATE_KEY)
        if not found:
            raise TokenError(f"token {token.label!r} holds no private key {uri.describe_key()}; "
                             "check the URI (p11tool --list-privkeys or pkcs11-tool -O lists them)")
        if len(found) > 1:
            raise TokenError(f"token {token.label!r} holds {len(found)} private keys {uri.describe_key()}; "
                             "add id= to the URI")
        public = _public_key_of(session, found[0], uri)
        mechanisms = frozenset(token.slot.get_mechanisms())
    return TokenKey(uri, token.label, session, found[0], public, mechanisms)


def generate_key(uri: TokenURI, pin: bytes | None, key_type: KeyType,
                 announce: Callable[[], None] | None = None) -> tuple[TokenKey, TokenURI]:
    """Make a key pair INSIDE the token: private, sensitive, never extractable.

    Refuses a label or id already present (a later lookup would be ambiguous)
    and a key type the token cannot make. Returns the key and the URI the
    store records: the given one, pinned to the new key's CKA_ID.
    """
    pkcs11 = _pkcs11()
    from pkcs11 import Attribute, Mechanism, MechanismFlag
    from pkcs11 import KeyType as P11KeyType

    token, session = _open(uri, read_pin(uri, pin), rw=True)
    cannot = (pkcs11.MechanismInvalid, pkcs11.KeySizeRange, pkcs11.DomainParamsInvalid, pkcs11.TemplateInconsistent,
              pkcs11.AttributeValueInvalid, pkcs11.FunctionFailed)
    with _closed_on_error(session, f"token {token.label!r}: key generation failed"):
        if _matching_objects(session, uri):
            raise TokenError(f"token {token.label!r} already holds {uri.describe_key()}; "
                             "choose another object= (meshpki never reuses or overwrites a token key)")
        key_id = uri.id if uri.id is not None else os.urandom(8)
        label = uri.object if uri.object is not None else key_id.hex()
        private_template = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False, Attribute.SIGN: True}
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}
        common: dict[str, Any] = dict(id=key_id, label=label, store=True,
                                      capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                                      private_template=private_template, public_template=public_template)
        bits = int(key_type.value[4:]) if key_type.is_rsa else None
        _require_mechanism(token, Mechanism.RSA_PKCS_KEY_PAIR_GEN if bits else Mechanism.EC_KEY_PAIR_GEN,
                           key_type, bits)
        if announce:
            announce()
        try:
            if bits:
                session.generate_keypair(P11KeyType.RSA, bits, **common)
            else:
                curve = "secp384r1" if key_type.value.endswith("p384") else "secp256r1"
                params = session.create_domain_parameters(P11KeyType.EC, {Attribute.EC_PARAMS: _CURVE_PARAMS[curve]},
                                                          local=True)
                params.generate_keypair(**common)
        except cannot as exc:
            raise TokenError(f"token {token.label!r} cannot make a {key_type.value} key ({type(exc).__name__}); "
                             "choose another --key-type") from None
    _close_quietly(session)
    recorded = TokenURI(**{**uri.__dict__, "id": key_id, "object": label, "pin_source": uri.pin_source})
    return open_key(recorded, pin if pin else None), recorded


def destroy_key(key: TokenKey, pin: bytes | None) -> bool:
    """Delete a key pair generate_key made, when what should have recorded it
    failed: a key no store names would sit in the token for good. Best effort
    (the original failure is what the user must see); True when it is gone."""
    try:
        _close_quietly(key._session)
        _token, session = _open(key.uri, read_pin(key.uri, pin), rw=True)
    except Exception:
        return False
    try:
        for found in _matching_objects(session, key.uri):  # the private and the public half
            found.destroy()
        return True
    except Exception:
        return False
    finally:
        _close_quietly(session)


def _require_mechanism(token: Any, mechanism: Any, key_type: KeyType, bits: int | None) -> None:
    if mechanism not in token.slot.get_mechanisms():
        raise TokenError(f"token {token.label!r} cannot make {key_type.value} keys (no {mechanism.name}); "
                         "choose another --key-type")
    if bits is not None:
        info = token.slot.get_mechanism_info(mechanism)
        if not info.min_key_length <= bits <= info.max_key_length:
            raise TokenError(f"token {token.label!r} cannot make {key_type.value} keys (RSA sizes "
                             f"{info.min_key_length}-{info.max_key_length}); choose another --key-type")
