"""`rollover tlsa`: TLSA records from certificates, keys or CA bundles (no openssl needed)."""

from __future__ import annotations

import argparse

from cryptography import x509

from rollover.cli import argtypes
from rollover.dane import tlsa
from rollover.display import clip
from rollover.dns.names import normalize_hostname
from rollover.environment import Environment
from rollover.errors import InputError, UsageError
from rollover.model import USAGE_NAMES, TLSARecord

EPILOG = """\
output:
  with --host: zone-file lines, owner _PORT._tcp.HOST. (port 25 unless --port), e.g.
      _25._tcp.mail.example.nl. IN TLSA 3 1 1 29c8...d084
  without --host: the bare rdata ("3 1 1 29c8...d084"), one record per line.
  --rdata: only the rdata lines, nothing else (no bundle table): for scripts.
  Lines starting with ';' are comments (the bundle table); zone files accept them.

inputs (PEM or DER): a certificate (a chain file: its first certificate, the leaf),
  a public key, or a private key (its public half is used; nothing secret is printed).

bundles (--bundle or --issuer): all certificates of all FILEs form one bundle; each is shown
  with subject, issuer and role (root = self-signed: subject == issuer and its own key verifies
  the signature), and DANE-TA (2 S M) records are printed for the chosen issuers
  (--issuer, default root). For SMTP the issuer must be in the chain the server sends.

usages 0 (PKIX-TA) and 1 (PKIX-EE) are accepted with a warning: SMTP clients (RFC 7672) ignore
  them. Selector 0 (full certificate) needs a certificate.
"""



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("files", nargs="+", metavar="FILE", type=argtypes.path,
                        help="certificate, chain, CA bundle, public or private key (PEM or DER)")
    parser.add_argument("--usage", type=argtypes.integer(0, 255), choices=(0, 1, 2, 3),
                        default=None,
                        help="certificate usage: 3 DANE-EE (default), 2 DANE-TA "
                             "(default with --bundle)")
    parser.add_argument("--selector", type=argtypes.integer(0, 255), choices=(0, 1), default=1,
                        help="0 full certificate, 1 SubjectPublicKeyInfo (default)")
    parser.add_argument("--mtype", type=argtypes.integer(0, 255), choices=(0, 1, 2), default=1,
                        help="matching type: 0 full, 1 SHA2-256 (default), 2 SHA2-512")
    parser.add_argument("--host", help="mail server host name: print zone-file lines")
    parser.add_argument("--port", type=argtypes.integer(1, 65535), default=None,
                        help="TCP port of the owner (default 25)")
    parser.add_argument("--ttl", type=argtypes.integer(0, 2**31 - 1), default=None,
                        help="TTL to put in zone-file lines")
    parser.add_argument("--rdata", action="store_true",
                        help="print only bare rdata lines (no owner, no comments)")
    parser.add_argument("--bundle", action="store_true",
                        help="treat the certificates as a CA bundle: show roles, emit 2 S M")
    parser.add_argument("--issuer", choices=("root", "intermediate", "all"), default=None,
                        help="which issuers of the bundle get records (default root; "
                             "implies --bundle)")


def run(args: argparse.Namespace, env: Environment) -> int:
    host = _check_output_options(args)
    bundle_mode = args.bundle or args.issuer is not None
    usage = args.usage if args.usage is not None else (2 if bundle_mode else 3)
    if bundle_mode and usage != 2:
        raise UsageError("--bundle/--issuer emit DANE-TA records: --usage must be 2 (or left out)")
    materials = [tlsa.load_material(f) for f in args.files]
    for note in (n for m in materials for n in m.notes):
        env.err(f"rollover: warning: {note}")
    if usage in (0, 1):
        env.err(f"rollover: warning: usage {usage} ({USAGE_NAMES[usage]}) is ignored by SMTP "
                "clients (RFC 7672 section 3.1.3); publish 3 (DANE-EE) or 2 (DANE-TA)")

    comments: list[str] = []
    if bundle_mode:
        records = _bundle_records(materials, args.issuer or "root", args.selector, args.mtype,
                                  comments)
    else:
        records = _plain_records(materials, usage, args.selector, args.mtype, env)

    if not args.rdata:
        for line in comments:
            env.out(line)
    for rec in records:
        if host is None:
            env.out(rec.to_text())
        else:
            env.out(tlsa.zone_line(rec, host, args.port or 25, args.ttl))
    return 0


def _check_output_options(args: argparse.Namespace) -> str | None:
    if args.rdata and (args.host or args.port is not None or args.ttl is not None):
        raise UsageError("--rdata prints bare rdata: leave out --host/--port/--ttl")
    if args.host is None:
        if args.port is not None or args.ttl is not None:
            raise UsageError("--port and --ttl only apply to zone-file lines: give --host too")
        return None
    host, problem = normalize_hostname(args.host)
    if problem:
        raise UsageError(f"--host '{clip(args.host, 60)}' is not a valid host name: {problem}")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is out of range (1-65535)")
    if args.ttl is not None and not 0 <= args.ttl <= 2**31 - 1:
        raise UsageError(f"--ttl {args.ttl} is out of range (0-2147483647)")
    return host


def _plain_records(materials: list[tlsa.Material], usage: int, selector: int,
                   mtype: int, env: Environment) -> list[TLSARecord]:
    records: list[TLSARecord] = []
    for m in materials:
        objs: list[x509.Certificate | tlsa.PublicKey | tlsa.PrivateKey]
        if m.certificates:
            objs = [m.certificates[0]]
            if len(m.certificates) > 1:
                env.err(f"rollover: note: {m.source} holds {len(m.certificates)} certificates; "
                        "using the first (the leaf); --bundle gives records for its issuers")
        else:
            objs = [*m.public_keys, *m.private_keys]
        for obj in objs:
            try:
                rec = tlsa.tlsa_record(obj, usage, selector, mtype)
            except InputError as exc:
                raise InputError(f"{m.source} ({m.kind}): {exc}") from None
            if rec not in records:
                records.append(rec)
    return records


def _bundle_records(materials: list[tlsa.Material], which: tlsa.IssuerChoice, selector: int,
                    mtype: int, comments: list[str]) -> list[TLSARecord]:
    certs = [c for m in materials for c in m.certificates]
    names = ", ".join(m.source for m in materials)
    if not certs:
        raise InputError(f"{names}: no certificate in the bundle (only keys)")
    entries = tlsa.split_bundle(certs)
    width = max(len(r.value) for r in tlsa.Role)
    for e in entries:
        comments.append(f"; {e.index} {e.role.value:<{width}}  subject: {e.subject}")
        comments.append(f";   {'':<{width}}  issuer:  {e.issuer}")
        if e.note:
            comments.append(f";   {'':<{width}}  note: {e.note}")
    records = tlsa.issuer_records(entries, which, selector, mtype)
    if not records:
        hint = {
            "root": "no root (self-signed) certificate; try --issuer intermediate",
            "intermediate": "no intermediate certificate; try --issuer root",
            "all": "no issuer (CA) certificate",
        }[which]
        raise InputError(f"{names}: {hint}")
    comments.append(f"; DANE-TA records for --issuer {which}: the server must send that "
                    "certificate in its chain (RFC 7672 section 3.1.2)")
    return records
