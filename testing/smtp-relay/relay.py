"""An SMTP relay for Roster's notice tests (aiosmtpd, from .dev/venv): stores what it accepts
in a maildir (aiosmtpd's Mailbox handler adds X-MailFrom and X-RcptTo), optionally requiring
STARTTLS or speaking TLS from the first byte, and optionally requiring AUTH (PLAIN, LOGIN) with
one user.

It binds 127.0.0.1 port 0 itself and, once listening, writes `127.0.0.1:PORT` and a newline
to stdout in one write: that line is the readiness signal (no port is chosen for it by anybody
else, so no other process can take it in between).

    python relay.py --maildir DIR [--tls none|starttls|tls --cert PEM --key PEM]
                    [--user NAME --password-file FILE]
"""

import argparse
import asyncio
import mailbox
import os
import ssl
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password-file")
    args = ap.parse_args()

    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    password = None
    if args.user:
        with open(args.password_file, "rb") as f:
            password = f.read().rstrip(b"\r\n")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login == args.user.encode() and auth_data.password == password)
        return AuthResult(success=ok, handled=False)

    mailbox.Maildir(args.maildir, create=True)
    handler = Mailbox(args.maildir)

    def factory():
        return SMTP(
            handler,
            hostname="relay.test",
            tls_context=context if args.tls == "starttls" else None,
            require_starttls=args.tls == "starttls",
            authenticator=authenticator if args.user else None,
            auth_required=bool(args.user),
            # With implicit TLS aiosmtpd does not notice the connection is encrypted (it checks
            # for its own STARTTLS), so it would never offer AUTH; the socket is TLS anyway.
            auth_require_tls=args.tls == "starttls",
        )

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory, "127.0.0.1", 0, ssl=context if args.tls == "tls" else None)
        port = server.sockets[0].getsockname()[1]
        os.write(sys.stdout.fileno(), f"127.0.0.1:{port}\n".encode())
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
