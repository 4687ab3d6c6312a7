"""A real SMTP server for the black-box tests (aiosmtpd, installed by .ci/tools).

    python tests/smtp/sink.py --dir DIR [--port PORT] [--auth USER:PASS]
                              [--tls CERT KEY [--smtps]]

Listens on 127.0.0.1:PORT (0, the default: any free port) and prints the bound port alone on
the first line of stdout once it accepts connections. Every message accepted is written to DIR
as one JSON file, `{"mail_from", "rcpt_tos", "data", "auth_user", "tls"}` (`data`: the raw
RFC 5322 message as received; `tls`: whether it came over TLS), named so that names sort in
arrival order. The file is complete before the server answers 250 to the message's data, and
appears whole (written aside, then renamed).

With `--auth`, AUTH PLAIN and LOGIN are offered, and a message is refused unless the client
authenticated as USER with PASS. With `--tls`, the server holds the certificate CERT (PEM,
with its key KEY): it requires STARTTLS before anything else (and AUTH only after it), or with
`--smtps` speaks TLS from the first byte (implicit TLS, as on port 465). A port still held (a
previous run on it not yet released) is retried for a few seconds, so that a test can restart
the server where the service under test expects it.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import ssl
import sys
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

SEQUENCE = itertools.count()


class Sink:
    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        # Nanoseconds, then a per-run counter, then the pid: names sort in arrival order and
        # never collide across restarts of the server on one directory.
        name = f"{time.time_ns():020d}-{next(SEQUENCE):06d}-{os.getpid()}"
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": envelope.content.decode("utf-8", errors="replace"),
            "auth_user": getattr(session, "auth_data", None),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        }
        partial = os.path.join(self.directory, f".{name}.tmp")
        with open(partial, "w", encoding="utf-8") as file:
            json.dump(record, file)
            file.flush()
            os.fsync(file.fileno())
        os.rename(partial, os.path.join(self.directory, f"{name}.json"))
        return "250 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        # handled=False: aiosmtpd answers (235 or 535) itself.
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return check


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="where each message is written")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--auth", help="USER:PASS required before MAIL (PLAIN or LOGIN)")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="STARTTLS required, with this certificate")
    parser.add_argument("--smtps", action="store_true", help="with --tls: TLS from the first byte instead")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    options = {}
    if args.auth:
        user, _, password = args.auth.partition(":")
        options = {
            "authenticator": authenticator(user, password),
            "auth_required": True,
            # Without --tls, plaintext AUTH is the point (a test server on loopback). aiosmtpd
            # counts only STARTTLS as TLS here; under --smtps every byte is TLS anyway.
            "auth_require_tls": bool(args.tls) and not args.smtps,
        }
    # aiosmtpd warns about plaintext AUTH and each lost connection: noise in a test's output.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
        if not args.smtps:
            options.update(tls_context=context, require_starttls=True)
    handler = Sink(args.dir)

    def session():
        # A fixed hostname: the default asks the resolver for our FQDN on every connection.
        return SMTP(handler, hostname="sink.test", enable_SMTPUTF8=True, **options)

    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 10
    while True:
        try:
            wrap = context if args.smtps else None
            server = await loop.create_server(session, "127.0.0.1", args.port, reuse_address=True, ssl=wrap)
            break
        except OSError:
            if args.port == 0 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
