"""The HTTP client of the download stage: GET one URL with retries, never reaching a
private address unless allowed. Long because: the address guard, the pinned connections
and the deadline handling are one mechanism (see the last paragraph).

A URL list is untrusted input: by default no request reaches a loopback, private,
link-local, multicast, reserved or unspecified address (cloud metadata at
169.254.169.254, an admin page on localhost). Each host name is resolved once, every
address is checked, and the connection goes to a checked address, so a second DNS
answer cannot swap in another one; the same holds for every redirect hop.
``download.allow_private`` lifts the rule (a mirror on the local network, tests).

Above 400 lines because the address guard, the pinned connections and the deadline
handling are one mechanism (each hop re-checked, each read bounded); split, each part
would be half a contract.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import functools
import http.client
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
import urllib.request
from typing import NamedTuple, Protocol
from urllib.parse import unquote, urljoin, urlsplit

__all__ = [
    "MAX_REDIRECTS",
    "ClientSettings",
    "Connections",
    "address_refusal",
    "fetch",
    "url_from_bytes",
]

MAX_REDIRECTS = 10
_KEEPALIVE_PER_THREAD = 8
_DRAIN_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
_DEADLINE_SLACK_S = 0.01
_TOO_SLOW = "too slow"
# bytes a request line cannot carry: controls, space, DEL and everything non-ASCII
UNSAFE_BYTES = re.compile(rb"[\x00-\x20\x7f-\xff]")


# -- URLs as bytes (the URL list's and a Location header's) ---------------------------


def url_from_bytes(raw: bytes) -> str | None:
    """An ASCII http(s) URL, or None when ``raw`` is not one."""
    head = raw[:8].lower()
    if head.startswith(b"http://"):
        host_at = 7
    elif head.startswith(b"https://"):
        host_at = 8
    else:
        return None
    if len(raw) == host_at or raw[host_at] in b"/?#":
        return None
    if UNSAFE_BYTES.search(raw) is None:
        return raw.decode("ascii")
    return _encode_url(raw, host_at)


def _encode_url(raw: bytes, host_at: int) -> str | None:
    """Percent-encode unsafe bytes of path and query; IDNA-encode a non-ASCII host."""
    end = len(raw)
    for stop in b"/?#":
        found = raw.find(bytes([stop]), host_at)
        if found != -1:
            end = min(end, found)
    netloc, rest = raw[host_at:end], raw[end:]
    if UNSAFE_BYTES.search(netloc):
        try:
            text = netloc.decode()
        except UnicodeDecodeError:
            return None
        userinfo, at, hostport = text.rpartition("@")
        host, colon, port = hostport.partition(":")
        if any(ch.isspace() or ord(ch) < 0x20 for ch in text) or not port.isascii():
            return None
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        userinfo = percent_encode(userinfo.encode()).decode("ascii")
        netloc = f"{userinfo}{at}{host}{colon}{port}".encode("ascii")
    encoded = raw[:host_at].lower() + netloc + percent_encode(rest)
    return encoded.decode("ascii")


def percent_encode(data: bytes) -> bytes:
    return UNSAFE_BYTES.sub(lambda match: b"%%%02X" % match[0][0], data)


# -- one URL ----------------------------------------------------------------------------


class ClientSettings(Protocol):
    """What the client reads of the stage's ``DownloadParams``."""

    timeout: float
    total_timeout: float
    retries: int
    backoff: float
    max_bytes: int
    user_agent: str
    allow_private: bool


class _Failure(Exception):
    """One attempt's failure; ``transient`` ones are worth another attempt."""

    def __init__(self, reason: str, transient: bool = False, wait: float = 0.0):
        super().__init__(reason)
        self.reason, self.transient, self.wait = reason, transient, wait


def fetch(url: str, params: ClientSettings, connections: Connections) -> tuple[bytes | None, str]:
    """(body, Content-Type) or (None, reason), retrying what may pass. Never raises for
    what a server does."""
    deadline = time.monotonic() + params.total_timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            data, content_type = _attempt(url, params, connections, deadline)
        except _Failure as failure:
            reason = failure.reason
            if reason == _TOO_SLOW:
                reason = f"too slow (over {params.total_timeout:g} s)"
            if attempt > 1:
                reason += f" after {attempt} attempts"
            if not failure.transient or attempt > params.retries:
                return None, reason
            delay = max(_backoff(url, attempt, params.backoff), failure.wait)
            if time.monotonic() + delay >= deadline:
                return None, reason
            time.sleep(delay)
            continue
        except Exception as error:
            # a URL that trips up http.client or socket in a way not mapped above must not
            # fail the shard on every rerun; the row names the error so it can be mapped
            return None, f"unexpected error ({type(error).__name__}: {short_error(error)})"
        return data, content_type


def _backoff(url: str, attempt: int, base: float) -> float:
    """Exponential, with jitter seeded by URL and attempt so reruns wait alike."""
    jitter = random.Random(f"{attempt}\0{url}").random()
    return base * 2 ** (attempt - 1) * (0.5 + jitter)


def short_error(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:80]


def _attempt(url: str, params: ClientSettings, connections, deadline: float) -> tuple[bytes, str]:
    """One try: follow redirects, then read the body within every limit."""
    for hop in range(MAX_REDIRECTS + 1):
        try:
            target = _Target.parse(url)
        except _Failure as failure:
            raise _Failure(f"bad redirect ({failure.reason})") if hop else failure from None
        exchange = connections.request(target, deadline)
        response = exchange.response
        status = response.status
        if status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            connections.discard(exchange, deadline)
            if not location:
                raise _Failure(f"HTTP {status} without Location")
            url = urljoin(url, _location(location))
            continue
        if status >= 300:
            wait = _retry_after(response.getheader("Retry-After"))
            connections.discard(exchange, deadline)
            transient = status in (408, 429) or status >= 500
            raise _Failure(f"HTTP {status}", transient=transient, wait=wait)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        data = _read_body(exchange, params, deadline)
        connections.release(exchange)
        return data, content_type
    raise _Failure("too many redirects")


def _location(value: str) -> str:
    """A Location header as text, its non-ASCII bytes percent-encoded."""
    raw = value.encode("latin-1", "replace")  # http.client decoded the header as latin-1
    return percent_encode(raw.strip()).decode("ascii")


def _retry_after(value: str | None) -> float:
    """Seconds a 429/503 asks for (integer form only), capped so one URL cannot stall."""
    if value and value.strip().isdigit():
        return min(float(value.strip()), 60.0)
    return 0.0


def _read_body(exchange, params: ClientSettings, deadline: float) -> bytes:
    """Stream the body, stopping at max_bytes and at the URL's deadline."""
    response = exchange.response
    length = response.length  # None when the server did not say
    too_large = f"too large (> {params.max_bytes} bytes)"
    if length is not None and length > params.max_bytes:
        exchange.close()
        raise _Failure(too_large)
    chunks, received = [], 0
    try:
        while True:
            exchange.arm(params.timeout, deadline)
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            received += len(chunk)
            if received > params.max_bytes:
                raise _Failure(too_large)
            chunks.append(chunk)
    except http.client.IncompleteRead:
        exchange.close()
        raise _Failure(f"truncated (got {received} bytes)", transient=True) from None
    except _Failure:
        exchange.close()
        raise
    except (OSError, http.client.HTTPException) as error:
        exchange.close()
        raise _network_failure(error, deadline) from None
    if length is not None and received < length:
        exchange.close()
        raise _Failure(f"truncated (got {received} of {length} bytes)", transient=True)
    return b"".join(chunks)


def _network_failure(error: BaseException, deadline: float) -> _Failure:
    """Map a socket-level error to a reason; refused and unknown hosts are final."""
    if isinstance(error, TimeoutError):
        # the socket timeout is cut to what is left of the URL's time, so a timeout at
        # the deadline means a server too slow overall, not an idle one
        if time.monotonic() >= deadline - _DEADLINE_SLACK_S:
            return _too_slow()
        return _Failure("timeout", transient=True)
    if isinstance(error, ConnectionRefusedError):
        return _Failure("connection refused")
    if isinstance(error, socket.gaierror):
        if error.errno == socket.EAI_AGAIN:
            return _Failure("DNS lookup failed", transient=True)
        return _Failure("unknown host")
    if isinstance(error, ssl.SSLCertVerificationError):
        return _Failure(f"TLS certificate error ({error.verify_message})")
    if isinstance(error, ssl.SSLError):
        return _Failure(f"TLS error ({error.reason or short_error(error)})")
    if isinstance(error, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return _Failure("connection closed", transient=True)
    if isinstance(error, http.client.HTTPException):
        return _Failure(f"bad HTTP response ({type(error).__name__})")
    return _Failure(f"connection error ({error.strerror or type(error).__name__})", transient=True)


def _too_slow() -> _Failure:
    """Out of the URL's time; _download adds the limit (bytes so far would vary by run)."""
    return _Failure(_TOO_SLOW)


# -- which addresses a URL may reach -------------------------------------------------------

_REFUSED = "refused address"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# checked in this order, so an address gets its most telling name
_NON_PUBLIC = (
    ("unspecified", lambda address: address.is_unspecified),
    ("loopback", lambda address: address.is_loopback),
    ("link-local", lambda address: address.is_link_local),
    ("multicast", lambda address: address.is_multicast),
    ("site-local", lambda address: getattr(address, "is_site_local", False)),
    ("reserved", lambda address: address.is_reserved),
    ("private", lambda address: address.is_private),
    ("not globally routable", lambda address: not address.is_global),
)


def address_refusal(address: str) -> str | None:
    """Why ``address`` (an IP in text form) is off limits by default, or None if public.

    IPv6 forms that carry an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64) are
    judged by the IPv4 address they reach.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or _nat64_ipv4(ip) or ip
    for kind, applies in _NON_PUBLIC:
        if applies(ip):
            return f"{_REFUSED} {address} ({kind})"
    return None


def _nat64_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_refusal(reason: str) -> bool:
    return reason.startswith(_REFUSED)


def _literal_refusal(host: str) -> str | None:
    """The refusal for a host that names an address without DNS (``127.0.0.1``,
    ``[::1]``, ``2130706433``, ``0x7f.1``, ``localhost``), or None.

    Used where a proxy resolves the name, so only what the URL itself says can be
    checked here.
    """
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return f"{_REFUSED} {host} (loopback)"
    try:
        return address_refusal(str(ipaddress.ip_address(name.partition("%")[0])))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", name):  # the decimal, octal and hex forms inet_aton reads
        try:
            return address_refusal(socket.inet_ntoa(socket.inet_aton(name)))
        except OSError:
            return None
    return None


def _resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo's answers for a TCP connection (a seam for the tests)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _allowed_addresses(host: str, port: int, allow_private: bool) -> list[tuple]:
    """Resolve ``host`` once; the answers a connection may use, or a refusal."""
    answers = list(dict.fromkeys(_resolve(host, port)))
    if not answers:
        raise _Failure("unknown host")
    if allow_private:
        return answers
    allowed, refusals = [], []
    for answer in answers:
        refusal = address_refusal(answer[4][0])
        if refusal is None:
            allowed.append(answer)
        else:
            refusals.append(refusal)
    if not allowed:
        raise _Failure(refusals[0])
    return allowed


def _pinned_connection(answers, _address, timeout=None, source_address=None):
    """``HTTPConnection._create_connection`` for a connection pinned to ``answers``."""
    return _open_socket(answers, timeout, source_address)


def _open_socket(answers: list[tuple], timeout, source_address=None) -> socket.socket:
    """Connect to the first of the checked ``answers`` that accepts, as
    ``socket.create_connection`` would after its own lookup."""
    error = None
    for family, kind, proto, _canonical, sockaddr in answers:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as failure:
            sock.close()
            error = failure
    raise error


class _Target(NamedTuple):
    scheme: str
    host: str
    port: int
    request_path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> _Target:
        if not url.isascii() or UNSAFE_BYTES.search(url.encode("ascii")):
            # a URL not from parse_url_list: encode it the same way
            url = url_from_bytes(url.strip().encode("utf-8", "surrogateescape")) or ""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise _Failure("bad URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise _Failure(f"bad URL (scheme {scheme})" if scheme else "bad URL")
        host = parts.hostname
        if not host:
            raise _Failure("bad URL")
        default = 443 if scheme == "https" else 80
        port = port or default
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = f"[{host}]" if ":" in host else host
        if port != default:
            host_header += f":{port}"
        return cls(scheme, host, port, path, host_header)


@dataclasses.dataclass
class _Exchange:
    """A request's connection, its response, and the socket (kept: http.client drops
    ``conn.sock`` for Connection: close responses while the body is still unread)."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse
    sock: socket.socket | None
    key: tuple

    def arm(self, timeout: float, deadline: float) -> None:
        """Give the next read the idle timeout, or what is left of the URL's time."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _too_slow()
        if self.sock is not None:
            self.sock.settimeout(min(timeout, left))

    def close(self) -> None:
        self.response.close()
        self.conn.close()


class Connections:
    """Keep-alive connections per thread: Flickr-heavy lists hit a few hosts again and again.

    A TLS handshake costs more than a typical 100 KB image, so reuse matters. Each
    thread has its own small pool (http.client connections are not thread-safe); all of
    them are closed at the end of the shard.
    """

    def __init__(self, params: ClientSettings):
        self.params = params
        self.local = threading.local()
        self.lock = threading.Lock()
        self.pools: list[collections.OrderedDict] = []  # every thread's, to close at the end
        self.proxies = urllib.request.getproxies()
        self.tls = ssl.create_default_context()

    def _pool(self) -> collections.OrderedDict:
        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = collections.OrderedDict()
            with self.lock:
                self.pools.append(pool)
        return pool

    def request(self, target: _Target, deadline: float) -> _Exchange:
        """Send a GET and return the exchange with the response headers read."""
        key = (target.scheme, target.host, target.port)
        conn = self._pool().pop(key, None)
        reused = conn is not None
        if conn is None:
            conn = self._connect(target, deadline)
        try:
            return self._send(conn, target, key, deadline)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
            conn.close()
            if not reused:
                raise _network_failure(error, deadline) from None
        # the server dropped an idle keep-alive connection: a new one, not a new attempt
        conn = self._connect(target, deadline)
        try:
            return self._send(conn, target, key, deadline)
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise _network_failure(error, deadline) from None

    def _send(self, conn, target: _Target, key: tuple, deadline: float) -> _Exchange:
        left = deadline - time.monotonic()
        if left <= 0:
            conn.close()
            raise _too_slow()
        conn.timeout = min(self.params.timeout, left)
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        try:
            conn.putrequest("GET", self._request_target(conn, target), skip_host=True)
            conn.putheader("Host", target.host_header)
            conn.putheader("User-Agent", self.params.user_agent)
            conn.putheader("Accept", "image/*,*/*;q=0.5")
            conn.putheader("Accept-Encoding", "identity")
            if getattr(conn, "proxy_auth", None):
                conn.putheader("Proxy-Authorization", conn.proxy_auth)
            conn.endheaders()
            sock = conn.sock
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise
        except (http.client.InvalidURL, UnicodeError):  # UnicodeError: IDNA, e.g. "a..b"
            conn.close()
            raise _Failure("bad URL") from None
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise _network_failure(error, deadline) from None
        return _Exchange(conn, response, sock, key)

    def _connect(self, target: _Target, deadline: float) -> http.client.HTTPConnection:
        """A new, not yet opened connection (it opens on the first request).

        Without a proxy the host is resolved here, once, and the connection is pinned
        to the checked answers; TLS still sends the host name (SNI) and checks the
        certificate against it. Through a proxy, which resolves the name itself, only
        an address written in the URL can be checked.
        """
        proxy = self._proxy(target)
        answers = None
        if proxy is None:
            host, port, auth = target.host, target.port, None
            try:
                answers = _allowed_addresses(host, port, self.params.allow_private)
            except UnicodeError:  # IDNA, e.g. "a..b"
                raise _Failure("bad URL") from None
            except OSError as error:
                raise _network_failure(error, deadline) from None
        else:
            host, port, auth = proxy
            refusal = None if self.params.allow_private else _literal_refusal(target.host)
            if refusal:
                raise _Failure(refusal)
        if target.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, context=self.tls)
            if proxy is not None:
                headers = {"Proxy-Authorization": auth} if auth else None
                conn.set_tunnel(target.host, target.port, headers=headers)
        else:
            conn = http.client.HTTPConnection(host, port)
            conn.via_proxy = proxy is not None
            conn.proxy_auth = auth
        if answers is not None:
            # http.client opens its socket through this attribute (its lookup and
            # connect in one); replaced so no second lookup can pick another address
            conn._create_connection = functools.partial(_pinned_connection, answers)
        return conn

    def _proxy(self, target: _Target) -> tuple[str, int, str | None] | None:
        """(host, port, Proxy-Authorization value) of the proxy the environment names
        (http_proxy, https_proxy, no_proxy), or None."""
        proxy = self.proxies.get(target.scheme)
        if not proxy or urllib.request.proxy_bypass(target.host):
            return None
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not parts.hostname:
            return None
        auth = None
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            auth = f"Basic {token}"
        return parts.hostname, parts.port or 80, auth

    @staticmethod
    def _request_target(conn, target: _Target) -> str:
        """Origin form, or the absolute form a plain-HTTP proxy needs."""
        if getattr(conn, "via_proxy", False):
            return f"{target.scheme}://{target.host_header}{target.request_path}"
        return target.request_path

    def release(self, exchange: _Exchange) -> None:
        """Pool the connection if its response was read to the end and may be reused."""
        response = exchange.response
        finished = response.isclosed() or response.length == 0
        if response.will_close or not finished:
            exchange.conn.close()
            response.close()
            return
        response.close()
        pool = self._pool()
        pool[exchange.key] = exchange.conn
        while len(pool) > _KEEPALIVE_PER_THREAD:
            _key, old = pool.popitem(last=False)
            old.close()

    def discard(self, exchange: _Exchange, deadline: float) -> None:
        """Finish with a response whose body is not wanted; keep the connection if cheap."""
        response = exchange.response
        length = response.length
        if response.will_close or length is None or length > _DRAIN_LIMIT:
            exchange.conn.close()
            response.close()
            return
        try:
            exchange.arm(self.params.timeout, deadline)
            response.read()
        except (_Failure, OSError, http.client.HTTPException):
            exchange.conn.close()
            response.close()
            return
        self.release(exchange)

    def close_all(self) -> None:
        """Close the pooled connections; the others were closed when they failed."""
        with self.lock:
            for pool in self.pools:
                while pool:
                    pool.popitem()[1].close()
