"""Real alert receivers on loopback: an SMTP server (aiosmtpd, with AUTH LOGIN/PLAIN) and a
Slack-compatible webhook (a small HTTP server). Both record the raw bytes they receive,
and the Airflow Connections that point the platform's notifiers at them."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-password-canary-5d1"
WEBHOOK_TOKEN = "T0000/B0000/webhook-token-canary-9f3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Receivers:
    smtp_port: int
    http_port: int
    mails: list[bytes] = field(default_factory=list)  # raw RFC 5322 messages
    mail_recipients: list[list[str]] = field(default_factory=list)
    posts: list[tuple[str, bytes]] = field(default_factory=list)  # (path, body)

    def connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for the platform's two alert Connections."""
        smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": self.smtp_port,
                "login": SMTP_USER, "password": SMTP_PASSWORD,
                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10,
                          "from_email": "airflow@mlcore.test"}}
        slack = {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{self.http_port}",
                 "password": WEBHOOK_TOKEN}
        return {"AIRFLOW_CONN_MLCORE_ALERT_SMTP": json.dumps(smtp),
                "AIRFLOW_CONN_MLCORE_ALERT_SLACK": json.dumps(slack)}

    def mail_texts(self) -> list[str]:
        """Each mail's subject and decoded HTML body."""
        out = []
        for raw in self.mails:
            msg = message_from_bytes(raw, policy=policy.default)
            body = msg.get_body(("html", "plain"))
            out.append(f"{msg['Subject']}\n{body.get_content() if body else ''}")
        return out

    def chat_texts(self) -> list[str]:
        return [json.loads(body)["text"] for _, body in self.posts]

    def everything(self) -> bytes:
        """Every message byte received, mail headers included: where a leaked secret would
        show. (The webhook's URL path is its address, and holds its token by design.)"""
        return b"\n".join([*self.mails, *(body for _, body in self.posts)])


@contextlib.contextmanager
def alert_receivers() -> Iterator[Receivers]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    rec = Receivers(free_port(), free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            rec.mails.append(envelope.original_content or envelope.content)
            rec.mail_recipients.append(list(envelope.rcpt_tos))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(), auth_data.password.decode()) == (SMTP_USER, SMTP_PASSWORD)
        return AuthResult(success=ok)

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.posts.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    smtp = Controller(Handler(), hostname="127.0.0.1", port=rec.smtp_port,
                      authenticator=authenticator, auth_require_tls=False, auth_required=True)
    http = ThreadingHTTPServer(("127.0.0.1", rec.http_port), Webhook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    smtp.start()
    thread.start()
    try:
        yield rec
    finally:
        http.shutdown()
        http.server_close()
        smtp.stop()
