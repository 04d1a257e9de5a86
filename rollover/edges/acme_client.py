"""ACME (RFC 8555) with the key rollover staged: DNS-01, ARI (RFC 9773), profiles, EAB.

The CSR is always made from the private key the caller hands in: the engine orders for the key
whose TLSA record it has already published, never for a fresh one. The account key lives in a 0600
file (created on first use); the account URL is saved next to it and reused on later runs.

Every failure becomes `AcmeIssueError` (an `AcmeError`): a one-line message for the operator and
`retryable`, which tells the engine whether a later run may succeed without anyone changing
anything (rate limits, bad nonces, a CA that is down, a challenge that did not validate yet).
The library's own pollers sleep and read the wall clock; this module polls with a `Clock` instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy import b64, jwa, jwk
from josepy import errors as jose_errors

from rollover import fileio
from rollover.clock import Clock, SystemClock, utc
from rollover.errors import AcmeError, RolloverError

log = logging.getLogger(__name__)

USER_AGENT = "rollover (acme-python)"
DEFAULT_ARI_RETRY = timedelta(hours=6)

# ACME error codes (RFC 8555 section 6.7) after which a later run may succeed unchanged.
RETRYABLE_CODES = frozenset(
    {
        "rateLimited",
        "badNonce",
        "serverInternal",
        "connection",
        "dns",
        "unauthorized",
        "incorrectResponse",
        "tls",
        "orderNotReady",
        "accountDoesNotExist",
    }
)


class AcmeIssueError(AcmeError):
    """An ACME failure. str() is one line; `retryable` says whether to try again later."""

    def __init__(self, message: str, *, retryable: bool = False, code: str | None = None,
                 retry_after: datetime | None = None, challenge: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.retry_after = retry_after  # the CA said: not before this (HTTP Retry-After)
        # the CA validated a challenge and found it wrong: CAs count these (Let's Encrypt:
        # 5 failed validations per name per hour), so the engine stops after a few in a row
        self.challenge = challenge


class Dns01(Protocol):
    """Publishes DNS-01 TXT records. `name` is absolute with a trailing dot
    ("_acme-challenge.mail.example.test."); `values` are the TXT strings (unquoted)."""

    def publish(self, name: str, values: frozenset[str]) -> None: ...

    def wait_visible(self, name: str, values: frozenset[str]) -> None:
        """Return once every authoritative server serves all `values` at `name`."""
        ...

    def cleanup(self, name: str, values: frozenset[str]) -> None: ...


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested renewal window (ARI) and when to ask again."""

    start: datetime
    end: datetime
    retry_after: datetime


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes  # leaf first, then the issuers, as the CA sent it
    not_after: datetime
    serial: str  # lowercase hex
    ari: RenewalWindow | None
    cleanup_problems: tuple[str, ...] = ()  # TXT records that could not be removed


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _problem_text(err: messages.Error) -> str:
    code = err.code or str(err.typ)
    parts = [code]
    if err.detail:
        parts.append(str(err.detail))
    for sub in err.subproblems or ():
        ident = f"{sub.identifier.value}: " if sub.identifier is not None else ""
        parts.append(f"[{ident}{sub.code or sub.typ}: {sub.detail or ''}]")
    return _one_line(": ".join(parts))


def translate(exc: BaseException, doing: str, server: str) -> AcmeIssueError:
    """Turn whatever the ACME library or requests raised into one AcmeIssueError."""
    if isinstance(exc, AcmeIssueError):
        return exc
    if isinstance(exc, messages.Error):
        code = exc.code
        return AcmeIssueError(
            f"ACME {doing} at {server} failed: {_problem_text(exc)}",
            retryable=code in RETRYABLE_CODES,
            code=code,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        found = re.search(r"certificate verify failed: ([^'\"()]+)", str(exc))
        why = found.group(1).strip() if found else _one_line(exc, 120)
        return AcmeIssueError(
            f"ACME {doing}: TLS verification of {server} failed (check acme.ca_bundle): {why}",
            retryable=False,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return AcmeIssueError(f"ACME {doing}: {server} did not answer in time", retryable=True)
    if isinstance(exc, requests.exceptions.ConnectionError):
        why = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
        return AcmeIssueError(f"ACME {doing}: {server}: {why}", retryable=True)
    if isinstance(exc, acme_errors.BadNonce | acme_errors.MissingNonce):
        return AcmeIssueError(
            f"ACME {doing} at {server}: nonce problem: {_one_line(exc)}",
            retryable=True,
            code="badNonce",
        )
    if (
        isinstance(exc, acme_errors.ClientError)
        and exc.args
        and isinstance(exc.args[0], requests.Response)
    ):
        status = exc.args[0].status_code
        return AcmeIssueError(
            f"ACME {doing} at {server}: unexpected HTTP {status} response",
            retryable=status >= 500 or status == 429,
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return AcmeIssueError(f"ACME {doing} at {server}: {_one_line(exc)}", retryable=True)
    if isinstance(exc, acme_errors.Error | jose_errors.Error | ValueError | KeyError):
        return AcmeIssueError(
            f"ACME {doing} at {server}: unexpected answer: {type(exc).__name__}: {_one_line(exc)}",
            retryable=False,
        )
    return AcmeIssueError(
        f"ACME {doing} at {server}: {type(exc).__name__}: {_one_line(exc)}", retryable=False
    )


class _Network(client.ClientNetwork):
    """ClientNetwork that retries a POST rejected with badNonce a few times (each retry uses
    the fresh nonce the rejection carried), instead of the library's single retry."""

    bad_nonce_retries = 8
    refused_retry_after: str | None = None  # Retry-After of the last refused (non-2xx) answer

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response: requests.Response = super()._send_request(method, url, *args, **kwargs)
        # the library turns a refusal into messages.Error and drops the headers: keep the one
        # that says when to come back (RFC 8555 6.6: rateLimited, 503)
        self.refused_retry_after = None if response.ok else response.headers.get("Retry-After")
        return response

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for _ in range(self.bad_nonce_retries):
            try:
                response: requests.Response = self._post_once(*args, **kwargs)
                return response
            except messages.Error as err:
                if err.code != "badNonce":
                    raise
                log.debug("ACME badNonce; retrying with a fresh nonce")
        last: requests.Response = self._post_once(*args, **kwargs)
        return last


@dataclass
class _Challenge:
    authzr: messages.AuthorizationResource
    challb: messages.ChallengeBody
    name: str  # TXT owner, absolute with trailing dot
    value: str


class AcmeIssuer:
    """Orders certificates from one ACME directory with one account."""

    def __init__(
        self,
        directory: str,
        account_key_path: Path,
        *,
        email: str | None = None,
        ca_bundle: Path | None = None,
        profile: str | None = None,
        eab_kid: str | None = None,
        eab_hmac_key: str | None = None,
        timeout: float = 300.0,
        network_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if (eab_kid is None) != (eab_hmac_key is None):
            raise AcmeIssueError(
                "ACME external account binding needs both eab kid and hmac key", retryable=False
            )
        self.directory_url = directory
        self.account_key_path = Path(account_key_path)
        self.registration_path = _registration_path(self.account_key_path)
        self.email = email
        self.ca_bundle = ca_bundle
        self.profile = profile
        self._eab = (eab_kid, eab_hmac_key) if eab_kid and eab_hmac_key else None
        self.timeout = timeout
        self.network_timeout = network_timeout
        self.clock: Clock = clock or SystemClock()
        self._server = urlsplit(directory).netloc or directory
        self._client: client.ClientV2 | None = None
        self._jwk: jwk.JWK | None = None

    # -- public ------------------------------------------------------------------------------

    @property
    def account_uri(self) -> str | None:
        c = self._client
        return c.net.account.uri if c is not None and c.net.account is not None else None

    def order(self, key_pem: bytes, names: Sequence[str], dns01: Dns01) -> Issued:
        """Order a certificate for `names` whose public key is the one of `key_pem`, validating
        by DNS-01 through `dns01`. TXT records are removed again whatever happens."""
        names = _check_names(names)
        key = _load_key(key_pem)
        csr_pem = crypto_util.make_csr(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            names,
        )
        deadline = self.clock.monotonic() + self.timeout
        acme = self._connect()
        orderr = self._new_order(acme, csr_pem)
        published: dict[str, frozenset[str]] = {}
        try:
            chain_pem = self._validate_and_finalize(acme, orderr, dns01, published, deadline)
        except BaseException as exc:
            problems = self._cleanup(dns01, published)
            err = exc if isinstance(exc, RolloverError) else None
            if problems and isinstance(err, AcmeIssueError):
                raise AcmeIssueError(
                    f"{err}; also: {'; '.join(problems)}", retryable=err.retryable, code=err.code
                ) from exc
            raise
        problems = self._cleanup(dns01, published)
        return self._issued(chain_pem, key, acme, tuple(problems))

    def renewal_window(
        self, cert_pem: bytes, chain_pem: bytes | None = None
    ) -> RenewalWindow | None:
        """The CA's ARI window for `cert_pem` (RFC 9773), or None when the directory has no
        `renewalInfo`. `chain_pem` supplies the issuer when the leaf lacks an AKI."""
        acme = self._connect(account=False)
        if "renewalInfo" not in acme.directory.to_partial_json():
            return None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise AcmeIssueError("ARI: the certificate is not PEM", retryable=False) from exc
        cert_id = ari_cert_id(cert, chain_pem)
        url = str(acme.directory["renewalInfo"]).rstrip("/") + "/" + cert_id
        with self._errors("renewal info request"):
            resp = acme.net.get(url, content_type=client.ClientNetwork.JSON_CONTENT_TYPE)
            info = messages.RenewalInfo.from_json(resp.json())
        now = self.clock.now()
        window = info.suggested_window
        if window.start is None or window.end is None or window.end < window.start:
            raise AcmeIssueError(
                f"ARI at {self._server}: no usable suggestedWindow", retryable=True
            )
        return RenewalWindow(
            start=utc(window.start), end=utc(window.end), retry_after=_retry_after(resp, now)
        )

    # -- connection and account --------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except AcmeIssueError:
            raise
        except Exception as exc:
            err = translate(exc, doing, self._server)
            net = self._client.net if self._client is not None else None
            header = getattr(net, "refused_retry_after", None)
            if err.retryable and header:
                err = self._with_retry_after(err, header)
            raise err from exc

    def _with_retry_after(self, err: AcmeIssueError, header: str) -> AcmeIssueError:
        """`err` with the CA's Retry-After (seconds or an HTTP date) as an absolute time."""
        now = self.clock.now()
        try:
            at = now + timedelta(seconds=max(0, int(header)))
        except ValueError:
            try:
                at = utc(parsedate_to_datetime(header))
            except (TypeError, ValueError):
                return err
        wait = max(0, int((at - now).total_seconds()))
        return AcmeIssueError(f"{err} (the CA asks to wait {wait}s: Retry-After)",
                              retryable=True, code=err.code, retry_after=at)

    def _account_key(self) -> jwk.JWK:
        if self._jwk is not None:
            return self._jwk
        path = self.account_key_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            new = ec.generate_private_key(ec.SECP256R1())
            fileio.create_exclusive(
                path,
                new.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        fileio.check_private(path, "ACME account key", AcmeIssueError)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise AcmeIssueError(
                f"ACME account key {path} is not a readable unencrypted PEM private key",
                retryable=False,
            ) from exc
        if isinstance(loaded, ec.EllipticCurvePrivateKey):
            self._jwk = jwk.JWKEC(key=loaded)
        elif isinstance(loaded, rsa.RSAPrivateKey):
            self._jwk = jwk.JWKRSA(key=loaded)
        else:
            raise AcmeIssueError(
                f"ACME account key {path}: only EC and RSA keys are supported", retryable=False
            )
        return self._jwk

    def _connect(self, account: bool = True) -> client.ClientV2:
        if self._client is None:
            account_key = self._account_key()
            alg = jwa.ES256 if isinstance(account_key, jwk.JWKEC) else jwa.RS256
            verify: Any = str(self.ca_bundle) if self.ca_bundle is not None else True
            net = _Network(
                account_key,
                alg=alg,
                verify_ssl=verify,
                user_agent=USER_AGENT,
                timeout=max(1, int(self.network_timeout)),
            )
            with self._errors("directory request"):
                directory = client.ClientV2.get_directory(self.directory_url, net)
            self._client = client.ClientV2(directory, net)
        if account and self._client.net.account is None:
            self._register(self._client)
        return self._client

    def _register(self, acme: client.ClientV2, force_new: bool = False) -> None:
        account_key = self._account_key()
        thumbprint = b64.b64encode(account_key.thumbprint()).decode("ascii")
        saved = _load_registrations(self.registration_path)
        entry = saved.get(self.directory_url)
        if not force_new and entry and entry.get("thumbprint") == thumbprint and entry.get("uri"):
            acme.net.account = messages.RegistrationResource(
                uri=entry["uri"], body=messages.Registration()
            )
            return
        meta = acme.directory.meta
        if meta.external_account_required and self._eab is None:
            raise AcmeIssueError(
                f"ACME server {self._server} requires external account "
                "binding: configure acme.eab (kid, hmac_key)",
                retryable=False,
            )
        eab = None
        if self._eab is not None:
            with self._errors("external account binding"):
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=account_key.public_key(),
                    kid=self._eab[0],
                    hmac_key=self._eab[1],
                    directory=acme.directory,
                )
        new = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True, external_account_binding=eab
        )
        acme.net.account = None
        try:
            with self._errors("account registration"):
                regr = acme.new_account(new)
        except AcmeIssueError as err:
            if not isinstance(err.__cause__, acme_errors.ConflictError):
                raise
            # The account exists for this key already: the Location header is its URL.
            regr = messages.RegistrationResource(
                uri=str(err.__cause__.location), body=messages.Registration()
            )
            acme.net.account = regr
        saved[self.directory_url] = {"uri": regr.uri, "thumbprint": thumbprint}
        fileio.atomic_write(
            self.registration_path, (json.dumps({"accounts": saved}, indent=2) + "\n").encode()
        )

    # -- ordering ------------------------------------------------------------------------------

    def _new_order(self, acme: client.ClientV2, csr_pem: bytes) -> messages.OrderResource:
        if self.profile:
            offered = acme.directory.meta.profiles or {}
            if self.profile not in offered:
                listed = ", ".join(sorted(offered)) or "none"
                raise AcmeIssueError(
                    f"ACME server {self._server} does not offer profile "
                    f"{self.profile!r} (offers: {listed})",
                    retryable=False,
                )
        for attempt in (1, 2):
            try:
                with self._errors("new order"):
                    orderr: messages.OrderResource = acme.new_order(csr_pem, profile=self.profile)
                    return orderr
            except AcmeIssueError as err:
                if err.code != "accountDoesNotExist" or attempt == 2:
                    raise
                log.info("ACME account at %s is gone; registering again", self._server)
                self._register(acme, force_new=True)
        raise AssertionError("unreachable")

    def _challenges(
        self, acme: client.ClientV2, orderr: messages.OrderResource
    ) -> list[_Challenge]:
        account_key = self._account_key()
        found: list[_Challenge] = []
        for authzr in orderr.authorizations:
            body = authzr.body
            ident = str(body.identifier.value)
            if body.status == messages.STATUS_VALID:
                continue
            dns = [c for c in body.challenges if isinstance(c.chall, challenges.DNS01)]
            if not dns:
                offered = ", ".join(sorted(str(c.chall.typ) for c in body.challenges))
                raise AcmeIssueError(
                    f"ACME server {self._server} offers no dns-01 challenge "
                    f"for {ident} (offers: {offered or 'none'})",
                    retryable=False,
                )
            challb = dns[0]
            name = challb.chall.validation_domain_name(ident).rstrip(".") + "."
            found.append(_Challenge(authzr, challb, name, challb.chall.validation(account_key)))
        return found

    def _validate_and_finalize(
        self,
        acme: client.ClientV2,
        orderr: messages.OrderResource,
        dns01: Dns01,
        published: dict[str, frozenset[str]],
        deadline: float,
    ) -> bytes:
        todo = self._challenges(acme, orderr)
        by_name: dict[str, frozenset[str]] = {}
        for ch in todo:
            by_name[ch.name] = by_name.get(ch.name, frozenset()) | {ch.value}
        for name, values in by_name.items():
            published[name] = values  # before publish: a half-done publish is cleaned up too
            self._dns("publishing", name, lambda n=name, v=values: dns01.publish(n, v))
        for name, values in by_name.items():
            self._dns("waiting for", name, lambda n=name, v=values: dns01.wait_visible(n, v))
        account_key = self._account_key()
        for ch in todo:
            with self._errors(f"answering the challenge for {ch.authzr.body.identifier.value}"):
                acme.answer_challenge(ch.challb, ch.challb.chall.response(account_key))
        for ch in todo:
            self._wait_authorization(acme, ch, deadline)
        return self._finalize(acme, orderr, deadline)

    def _dns(self, doing: str, name: str, call: Any) -> None:
        try:
            call()
        except RolloverError as exc:
            if isinstance(exc, AcmeIssueError):
                raise
            # a provider error that cannot heal (REFUSED, NOTAUTH, bad TSIG) stops the slot
            # here too, not only when it refuses a TLSA update
            raise AcmeIssueError(
                f"DNS-01: {doing} TXT {name} failed: {exc}",
                retryable=not getattr(exc, "permanent", False),
            ) from exc
        except Exception as exc:
            raise AcmeIssueError(
                f"DNS-01: {doing} TXT {name} failed: {type(exc).__name__}: {_one_line(exc)}",
                retryable=True,
            ) from exc

    def _pause(self, deadline: float, delay: float, what: str) -> None:
        left = deadline - self.clock.monotonic()
        if left <= 0:
            raise AcmeIssueError(
                f"ACME at {self._server}: gave up after {self.timeout:.0f}s waiting for {what} "
                "(acme.order_timeout); a fresh order follows after the backoff",
                retryable=True,
            )
        self.clock.sleep(min(delay, left))

    def _wait_authorization(self, acme: client.ClientV2, ch: _Challenge, deadline: float) -> None:
        ident = str(ch.authzr.body.identifier.value)
        delay = 0.2
        authzr = ch.authzr
        while True:
            with self._errors(f"authorization poll for {ident}"):
                authzr, response = acme.poll(authzr)
            status = authzr.body.status
            if status == messages.STATUS_VALID:
                return
            if status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                raise _challenge_failure(authzr, ident, self._server)
            wait = _retry_seconds(response, delay)
            self._pause(deadline, wait, f"the authorization of {ident}")
            delay = min(delay * 1.5, 2.0)

    def _post_as_get(self, acme: client.ClientV2, url: str) -> requests.Response:
        response: requests.Response = acme.net.post(
            url, None, new_nonce_url=acme.directory["newNonce"]
        )
        return response

    def _finalize(
        self, acme: client.ClientV2, orderr: messages.OrderResource, deadline: float
    ) -> bytes:
        with self._errors("finalize"):
            try:
                acme.begin_finalization(orderr)
            except messages.Error as err:
                if err.code != "orderNotReady":
                    raise
        delay = 0.2
        while True:
            with self._errors("order poll"):
                response = self._post_as_get(acme, orderr.uri)
                body = messages.Order.from_json(response.json())
            if body.status == messages.STATUS_VALID and body.certificate:
                with self._errors("certificate download"):
                    return self._post_as_get(acme, body.certificate).content
            if body.status == messages.STATUS_INVALID:
                why = _problem_text(body.error) if body.error is not None else "no reason given"
                raise AcmeIssueError(
                    f"ACME order at {self._server} became invalid: {why}",
                    retryable=body.error is not None and body.error.code in RETRYABLE_CODES,
                )
            if body.status == messages.STATUS_READY:
                with self._errors("finalize"):
                    acme.begin_finalization(orderr)
            self._pause(deadline, _retry_seconds(response, delay),
                        f"the certificate (order {orderr.uri} still {body.status.name})")
            delay = min(delay * 1.5, 2.0)

    def _issued(
        self, chain_pem: bytes, key: Any, acme: client.ClientV2, problems: tuple[str, ...]
    ) -> Issued:
        try:
            chain = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise AcmeIssueError(
                f"ACME server {self._server} sent a certificate chain that is not PEM",
                retryable=True,
            ) from exc
        leaf = chain[0]
        if _spki(leaf.public_key()) != _spki(key.public_key()):
            raise AcmeIssueError(
                f"ACME server {self._server} issued a certificate for a "
                "different key than the one in the CSR",
                retryable=False,
            )
        ari: RenewalWindow | None = None
        if "renewalInfo" in acme.directory.to_partial_json():
            try:
                ari = self.renewal_window(leaf.public_bytes(serialization.Encoding.PEM), chain_pem)
            except AcmeIssueError as err:
                log.warning("%s", err)
        return Issued(
            chain_pem=chain_pem,
            not_after=leaf.not_valid_after_utc,
            serial=f"{leaf.serial_number:x}",
            ari=ari,
            cleanup_problems=problems,
        )

    def _cleanup(self, dns01: Dns01, published: dict[str, frozenset[str]]) -> list[str]:
        problems: list[str] = []
        for name, values in published.items():
            try:
                dns01.cleanup(name, values)
            except Exception as exc:
                text = str(exc) if isinstance(exc, RolloverError) else _one_line(exc)
                problems.append(f"could not remove TXT {name}: {text}")
                log.warning("DNS-01: could not remove TXT %s: %s", name, text)
        return problems


# -- helpers ---------------------------------------------------------------------------------


def _registration_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".account.json")


def _load_registrations(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable ACME account file %s", path)
        return {}
    accounts = data.get("accounts") if isinstance(data, dict) else None
    if not isinstance(accounts, dict):
        return {}
    return {k: v for k, v in accounts.items() if isinstance(v, dict)}


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    cleaned: list[str] = []
    for n in names:
        name = n.strip().rstrip(".").lower()
        if not name or " " in name:
            raise AcmeIssueError(f"ACME order: {n!r} is not a host name", retryable=False)
        if name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise AcmeIssueError("ACME order: no names to put in the certificate", retryable=False)
    return cleaned


def _load_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AcmeIssueError(
            "ACME order: the staged key is not an unencrypted PEM private key", retryable=False
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise AcmeIssueError("ACME order: the staged key must be ECDSA or RSA", retryable=False)
    return key


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _challenge_failure(
    authzr: messages.AuthorizationResource, ident: str, server: str
) -> AcmeIssueError:
    for challb in authzr.body.challenges:
        if challb.error is not None:
            code = challb.error.code
            return AcmeIssueError(
                f"ACME dns-01 challenge for {ident} failed at {server}: "
                f"{_problem_text(challb.error)}",
                retryable=code in RETRYABLE_CODES or code is None,
                code=code,
                challenge=True,
            )
    return AcmeIssueError(
        f"ACME authorization for {ident} at {server} is "
        f"{authzr.body.status} (no error detail given)",
        retryable=True,
    )


def _retry_seconds(response: requests.Response, default: float) -> float:
    value = response.headers.get("Retry-After")
    if value is None:
        return default
    try:
        return max(0.0, min(float(int(value)), 30.0))
    except ValueError:
        return default


def _retry_after(response: requests.Response, now: datetime) -> datetime:
    """Absolute time from a Retry-After header (seconds or HTTP date); 6 h if absent/bad."""
    value = response.headers.get("Retry-After")
    if value:
        try:
            return now + timedelta(seconds=max(0, int(value)))
        except ValueError:
            try:
                return utc(parsedate_to_datetime(value))
            except (TypeError, ValueError):
                pass
    return now + DEFAULT_ARI_RETRY


def ari_cert_id(cert: x509.Certificate, chain_pem: bytes | None = None) -> str:
    """RFC 9773 certificate identifier: base64url(AKI keyIdentifier) "." base64url(serial)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        key_id = aki.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    if key_id is None and chain_pem:
        issuers = x509.load_pem_x509_certificates(chain_pem)
        for issuer in issuers:
            if issuer.subject == cert.issuer and issuer != cert:
                key_id = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
                break
    if key_id is None:
        raise AcmeIssueError(
            "ARI: the certificate has no Authority Key Identifier and no issuer was given",
            retryable=False,
        )
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return b64.b64encode(key_id).decode("ascii") + "." + b64.b64encode(serial_bytes).decode("ascii")
