#!/usr/bin/env python3
"""Verifies an access token knowing only the JWKS URL: what a separate service would do.

Shares no code with the API: the JWKS is fetched over HTTP, the Ed25519 signature is checked by
OpenSSL, the claims by this script. Prints the token's subject and exits 0 when valid; prints why
and exits 1 when not.

    scripts/verify-jwt.py --jwks http://127.0.0.1:8080/.well-known/jwks.json \
        --iss ecommerce-saga --aud ecommerce-saga-api TOKEN
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
LEEWAY = 30


def b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def fail(why: str) -> None:
    print(f"invalid: {why}")
    sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jwks", required=True)
    p.add_argument("--iss", required=True)
    p.add_argument("--aud", required=True)
    p.add_argument("token")
    a = p.parse_args()

    parts = a.token.split(".")
    if len(parts) != 3:
        fail("not a JWS compact token")
    try:
        header = json.loads(b64url(parts[0]))
        claims = json.loads(b64url(parts[1]))
        signature = b64url(parts[2])
    except ValueError as e:
        fail(f"malformed: {e}")
    if header.get("alg") != "EdDSA":
        fail(f"algorithm {header.get('alg')!r} is not EdDSA")
    with urllib.request.urlopen(a.jwks, timeout=10) as r:
        jwks = json.load(r)
    keys = [k for k in jwks.get("keys", []) if k.get("kid") == header.get("kid")]
    if not keys:
        fail("unknown kid")
    jwk = keys[0]
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" in jwk:
        fail("unexpected key type")

    with tempfile.TemporaryDirectory() as d:
        pem = os.path.join(d, "key.pem")
        der = ED25519_SPKI_PREFIX + b64url(jwk["x"])
        with open(pem, "w") as f:
            f.write("-----BEGIN PUBLIC KEY-----\n")
            f.write(base64.encodebytes(der).decode())
            f.write("-----END PUBLIC KEY-----\n")
        with open(os.path.join(d, "msg"), "wb") as f:
            f.write(f"{parts[0]}.{parts[1]}".encode())
        with open(os.path.join(d, "sig"), "wb") as f:
            f.write(signature)
        check = subprocess.run(
            ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin",
             "-in", os.path.join(d, "msg"), "-sigfile", os.path.join(d, "sig")],
            capture_output=True,
        )
        if check.returncode != 0:
            fail("bad signature")

    now = time.time()
    if claims.get("iss") != a.iss:
        fail("wrong issuer")
    aud = claims.get("aud")
    if a.aud not in (aud if isinstance(aud, list) else [aud]):
        fail("wrong audience")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] + LEEWAY < now:
        fail("expired")
    if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] - LEEWAY > now:
        fail("not yet valid")
    print(claims["sub"])


if __name__ == "__main__":
    main()
