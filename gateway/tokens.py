"""``--auth-key``: verifying tokens (PyJWT, cryptography).

Imported by :class:`gateway.auth.Auth` only when a key is configured: the two
libraries cost about 9 MiB of a process's memory, which a gateway without
tokens does not pay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .auth import HMAC_MIN_BYTES, _NotVerified, _TokenInvalid

__all__ = ["TokenKey"]


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(
        (".pem", ".json", ".jwks", ".key", ".pub", ".crt")
    )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a secret that is no possible path
        return False


class TokenKey:
    """``--auth-key``: what verifies tokens, and with which algorithms.

    The algorithms follow from the key alone, never from the token (RFC 8725
    section 2.1): an HMAC secret takes HS256; an RSA public key RS256; an EC
    key ES256, ES384 or ES512 by its curve; an Ed25519 key EdDSA; a JWKS each
    key's own (its ``alg``, else its type), chosen by the token's ``kid``.
    """

    __slots__ = ("_algorithms", "_jwks", "_key", "audience", "describe", "issuer", "leeway")

    def __init__(self, spec: str, *, audience: str, issuer: str, leeway: float) -> None:
        self.audience = audience or None
        self.issuer = issuer or None
        self.leeway = leeway
        self._jwks: dict[str | None, jwt.PyJWK] | None = None
        self._key: Any = None
        self._algorithms: list[str] = []
        path = Path(spec).expanduser()
        if _is_file(path):
            self._load_file(path)
        elif _looks_like_path(spec):
            raise ValueError(f"auth_key: no such key file: {spec}")
        else:
            self._secret(spec.encode(), "the setting")

    def _secret(self, secret: bytes, where: str) -> None:
        if len(secret) < HMAC_MIN_BYTES:
            raise ValueError(
                f"auth_key: an HS256 secret needs at least {HMAC_MIN_BYTES} bytes "
                f"(RFC 7518 section 3.2), {where} holds {len(secret)}"
            )
        self._key = secret
        self._algorithms = ["HS256"]
        self.describe = f"HS256 secret ({len(secret)} bytes, from {where})"

    def _load_file(self, path: Path) -> None:
        raw = path.read_bytes()
        text = raw.strip()
        if text.startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" in text.split(b"\n", 1)[0]:
                raise ValueError(
                    f"auth_key: {path} holds a private key; give the gateway the public key "
                    "(it only verifies)"
                )
            if text.startswith(b"-----BEGIN CERTIFICATE"):
                key: Any = x509.load_pem_x509_certificate(text).public_key()
            else:
                key = load_pem_public_key(text)
            self._key = key
            self._algorithms = [_algorithm(key, path)]
            self.describe = f"{self._algorithms[0]} public key from {path}"
        elif text.startswith(b"{"):
            try:
                doc = json.loads(text)
                keys = jwt.PyJWKSet.from_dict(doc).keys if "keys" in doc else [jwt.PyJWK(doc)]
            except (ValueError, jwt.PyJWTError) as exc:
                raise ValueError(f"auth_key: {path} is no usable JWK or JWKS: {exc}") from None
            self._jwks = {k.key_id: k for k in keys}
            if len(self._jwks) == 1:
                self._jwks[None] = keys[0]  # the one key: tokens need no kid
            algs = sorted({k.algorithm_name for k in keys})
            self.describe = f"JWKS from {path} ({len(keys)} keys: {', '.join(algs)})"
        else:
            self._secret(text, str(path))

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims; raises ``_NotVerified``, or ``_TokenInvalid`` for a
        verified token that is not valid now."""
        key, algorithms = self._key, self._algorithms
        try:
            if self._jwks is not None:
                kid = jwt.get_unverified_header(token).get("kid")
                jwk = self._jwks.get(kid) if isinstance(kid, str | None) else None
                if jwk is None:
                    raise _NotVerified("no key for its kid")
                key, algorithms = jwk.key, [jwk.algorithm_name]
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except (jwt.DecodeError, jwt.InvalidAlgorithmError) as exc:
            # DecodeError includes InvalidSignatureError: not this key's token.
            raise _NotVerified(str(exc)) from None
        except jwt.InvalidTokenError as exc:
            raise _TokenInvalid(_why(exc)) from None


def _algorithm(key: Any, path: Path) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"auth_key: {path}: a {type(key).__name__} is not supported")


def _why(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is not for this audience (aud; --auth-audience)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token is not from the expected issuer (iss; --auth-issuer)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim} claim"
    return f"the token is not valid: {exc}"
