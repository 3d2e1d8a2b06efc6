"""Test identity providers on loopback: real keys, a JWKS server, and a forward-auth API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://api.example.test"
AUDIENCE = "syncd-tests"
HS_SECRET = "s3cret-shared-with-the-api-0123456789abcdef"


class LocalHttp:
    """A tiny HTTP server on 127.0.0.1 answering GETs with ``handler(headers)``."""

    def __init__(self, handler: Callable[[dict[str, str]], tuple[int, dict[str, str], bytes]]):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                status, headers, body = handler({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Issuer:
    """Signs tokens like the API beside syncd would, and publishes its JWKS."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.published: list[dict[str, Any]] = [
            {**RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "kid": "rsa-1",
             "alg": "RS256", "use": "sig"},
            {**ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "kid": "ec-1",
             "alg": "ES256", "use": "sig"},
            {**OKPAlgorithm.to_jwk(self.ed.public_key(), as_dict=True), "kid": "ed-1",
             "alg": "EdDSA", "use": "sig"},
        ]
        self.jwks = LocalHttp(
            lambda _headers: (200, {"Content-Type": "application/json"},
                              orjson.dumps({"keys": self.published}))
        )

    def rotate_in(self, kid: str) -> rsa.RSAPrivateKey:
        """Publish one more RSA key (a rotation) and return its private half."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published.append({**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
                               "kid": kid, "alg": "RS256", "use": "sig"})
        return key

    def token(self, sub: str, *, alg: str = "RS256", kid: str | None = None, key: Any = None,
              ttl: float = 300, **claims: Any) -> str:
        now = time.time()
        payload = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now),
                   "exp": int(now + ttl), "scope": "read write", **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        signing: Any = key
        if signing is None:
            signing = {"RS256": self.rsa, "ES256": self.ec, "EdDSA": self.ed,
                       "HS256": HS_SECRET}[alg]
        default_kid = {"RS256": "rsa-1", "ES256": "ec-1", "EdDSA": "ed-1"}.get(alg)
        headers = {"kid": kid or default_kid} if (kid or default_kid) else None
        return jwt.encode(payload, signing, algorithm=alg, headers=headers)

    def close(self) -> None:
        self.jwks.close()


# The environment of a syncd that accepts HS256 tokens signed with HS_SECRET by this issuer.
HS_JWT_ENV = {
    "SYNCD_AUTH_MODE": "jwt",
    "SYNCD_JWT_ALGORITHMS": "HS256",
    "SYNCD_JWT_SECRET": HS_SECRET,
    "SYNCD_JWT_ISSUER": ISSUER,
    "SYNCD_JWT_AUDIENCE": AUDIENCE,
}
