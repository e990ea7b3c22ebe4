"""A fake Vertex AI: the OAuth token endpoint and Gemini ``:generateContent``.

The token endpoint verifies the JWT-bearer assertion's RS256 signature with the public
half of a key generated in the test and checks its claims, then hands out a fresh
access token; ``:generateContent`` accepts only the newest token. Calls are checked the
way ``FakeGemini`` checks them (inline images, the prompt part, response modalities)
and must name the ``global`` location, the only one that serves them.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import msgspec
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.base import FakeProvider
from tests.fakes.google import FakeGemini

CLIENT_EMAIL = "imagegate@test-project.iam.gserviceaccount.com"


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_file(private: rsa.RSAPrivateKey, token_uri: str) -> bytes:
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return msgspec.json.encode(
        {"type": "service_account", "project_id": "test-project",
         "private_key_id": "kid-1", "private_key": pem, "client_email": CLIENT_EMAIL,
         "token_uri": token_uri}
    )  # fmt: skip


class FakeVertex(FakeProvider):
    def __init__(self, public: rsa.RSAPublicKey | None, *, token: str = "") -> None:
        # With a public key, tokens come from /token; else `token` is the only one valid.
        super().__init__(token)
        self.public = public
        self.expires_in = 3600
        self.tokens_issued = 0
        self.token_status = 200
        self.token_garbage = False
        self.bodies: list[dict[str, Any]] = []
        self.models: list[str] = []
        self.locations: list[str] = []
        self.gemini_images: list[list[tuple[str, bytes]]] = []  # per Gemini call
        self.app.router.add_post("/token", self._token)
        self.app.router.add_post(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}",
            self._generate,
        )

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message, "status": "X"}}

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assertion = str(form["assertion"])
        head, claims, sig = assertion.split(".")
        assert self.public is not None
        self.public.verify(
            _unb64url(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(),
            hashes.SHA256(),
        )  # fmt: skip
        header = msgspec.json.decode(_unb64url(head))
        body = msgspec.json.decode(_unb64url(claims))
        assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
        assert body["iss"] == CLIENT_EMAIL
        assert body["aud"] == str(request.url)
        assert body["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        assert abs(body["iat"] - time.time()) < 60
        assert body["exp"] - body["iat"] == 3600
        if self.token_status != 200:
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT Signature.",
                },
                status=self.token_status,
            )
        if self.token_garbage:
            return web.Response(text="<html>maintenance</html>")
        self.tokens_issued += 1
        self.key = f"ya29.fake-{self.tokens_issued}"
        return web.json_response(
            {"access_token": self.key, "expires_in": self.expires_in,
             "token_type": "Bearer"}
        )  # fmt: skip

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        assert method == "generateContent", request.path
        self.models.append(model)
        self.locations.append(request.match_info["location"])
        rec = await self.record(request)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(
                {"error": {"code": 401, "message": "Request had invalid authentication "
                           "credentials.", "status": "UNAUTHENTICATED"}},
                status=401,
            )  # fmt: skip
        assert rec.json is not None
        self.bodies.append(rec.json)
        assert request.match_info["location"] == "global", request.path
        *images, prompt = rec.json["contents"][0]["parts"]
        assert "text" in prompt
        self.gemini_images.append(
            [(p["inlineData"]["mimeType"], base64.b64decode(p["inlineData"]["data"]))
             for p in images]
        )  # fmt: skip
        config = rec.json["generationConfig"]
        assert config["responseModalities"] == ["TEXT", "IMAGE"]
        assert "candidateCount" not in config
        return await self.answer(request, lambda: web.json_response(FakeGemini.reply()))
