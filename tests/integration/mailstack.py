"""Handle on the project's local mail stack (``scripts/mailstack``) for integration tests.

The stack is a real Dovecot + Postfix pair on loopback. This module starts it through the
script and offers fast server-side helpers (delivery, counting, reset) built on ``doveadm``,
so tests only go over the wire for the behaviour they actually test.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tests.integration.oauth2_tokens import KEY_PATH, mint_jwt, read_key

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "mailstack"
DEFAULT_ROOT = Path("/tmp/mailkit-mailstack")

# MailStack field -> (environment variable read by scripts/mailstack, default)
_PORTS: dict[str, tuple[str, int]] = {
    "smtp_port": ("SMTP", 10025),
    "submission_port": ("SUBMISSION", 10587),
    "submissions_port": ("SUBMISSIONS", 10465),
    "alt_port": ("ALT", 12525),
    "imap_port": ("IMAP", 10143),
    "imaps_port": ("IMAPS", 10993),
    "pop3_port": ("POP3", 10110),
    "pop3s_port": ("POP3S", 10995),
}

# url() name -> (scheme, port field); the insecure variant replaces the scheme.
_ENDPOINTS: dict[str, tuple[str, str, str | None]] = {
    "submissions": ("smtps", "submissions_port", None),
    "submission": ("smtp+starttls", "submission_port", None),
    "smtp": ("smtp+starttls", "smtp_port", "smtp+insecure"),
    "alt": ("smtp+starttls", "alt_port", "smtp+insecure"),
    "imaps": ("imaps", "imaps_port", None),
    "imap": ("imap+starttls", "imap_port", "imap+insecure"),
    "pop3s": ("pop3s", "pop3s_port", None),
    "pop3": ("pop3+starttls", "pop3_port", "pop3+insecure"),
}

_MAILDIR_SEQ = 0

# Users whose folders the benchmarks fill (``Bench10000`` and the like: 10k messages, slow to
# rebuild): the tests' clean-up (``reset_test_users``, the ``clean_mailstack`` fixture) empties
# only their standard folders, where tests deliver, and keeps the others.
BENCH_USERS = frozenset({"perf@example.test"})
STANDARD_FOLDERS = ("INBOX", "Drafts", "Sent", "Trash", "Junk")


class MailStackError(RuntimeError):
    """The stack could not be started or a server-side helper failed."""


def _read_users(root: Path) -> Mapping[str, str]:
    """address -> password, parsed from the Dovecot passwd-file the script writes."""
    users: dict[str, str] = {}
    for line in (root / "users").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        address, secret = line.split(":", 2)[:2]
        users[address] = secret.removeprefix("{PLAIN}")
    return MappingProxyType(users)


@dataclass(frozen=True)
class MailStack:
    root: Path
    ca_file: Path
    host: str = "127.0.0.1"
    smtp_port: int = 10025
    submission_port: int = 10587
    submissions_port: int = 10465
    alt_port: int = 12525
    imap_port: int = 10143
    imaps_port: int = 10993
    pop3_port: int = 10110
    pop3s_port: int = 10995
    users: Mapping[str, str] = field(default_factory=dict)

    # --- starting -----------------------------------------------------------------------

    @classmethod
    def start(cls, **overrides: object) -> MailStack:
        """Run ``scripts/mailstack up`` (a fast no-op when already up) and describe the stack.

        ``overrides`` are MailStack fields: ``root``, ``host``, ``smtp_port``, ... and
        optionally ``tls_dir`` (shared CA between instances). Unset fields come from the
        ``MAILSTACK_*`` environment, then the defaults.
        """
        unknown = set(overrides) - {"root", "host", "tls_dir", *_PORTS}
        if unknown:
            raise TypeError(f"unknown MailStack settings: {sorted(unknown)}")
        env = cls._environment(overrides)
        result = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise MailStackError(
                f"scripts/mailstack up failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        root = Path(env["MAILSTACK_ROOT"])
        ports = {name: int(env[f"MAILSTACK_{var}_PORT"]) for name, (var, _) in _PORTS.items()}
        return cls(
            root=root,
            ca_file=Path(env["MAILSTACK_TLS_DIR"]) / "ca.crt",
            host=env["MAILSTACK_ADDR"],
            users=_read_users(root),
            **ports,  # type: ignore[arg-type]
        )

    @staticmethod
    def _environment(overrides: Mapping[str, object]) -> dict[str, str]:
        env = dict(os.environ)
        root = str(overrides.get("root") or env.get("MAILSTACK_ROOT") or DEFAULT_ROOT)
        env["MAILSTACK_ROOT"] = root
        env["MAILSTACK_ADDR"] = str(overrides.get("host") or env.get("MAILSTACK_ADDR") or "127.0.0.1")
        env["MAILSTACK_TLS_DIR"] = str(
            overrides.get("tls_dir") or env.get("MAILSTACK_TLS_DIR") or Path(root) / "tls"
        )
        for name, (var, default) in _PORTS.items():
            value = overrides.get(name)
            if value is None:
                value = env.get(f"MAILSTACK_{var}_PORT") or env.get(f"{var}_PORT") or default
            env[f"MAILSTACK_{var}_PORT"] = str(int(value))  # type: ignore[call-overload]
        return env

    def env(self) -> dict[str, str]:
        """Environment for running ``scripts/mailstack`` against this instance."""
        env = dict(os.environ)
        env["MAILSTACK_ROOT"] = str(self.root)
        env["MAILSTACK_ADDR"] = self.host
        env["MAILSTACK_TLS_DIR"] = str(self.ca_file.parent)
        for name, (var, _) in _PORTS.items():
            env[f"MAILSTACK_{var}_PORT"] = str(getattr(self, name))
        return env

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``scripts/mailstack ARGS`` for this instance."""
        result = subprocess.run(
            [str(SCRIPT), *args], env=self.env(), capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise MailStackError(
                f"scripts/mailstack {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def stop(self) -> None:
        self.script("down")

    # --- endpoints ----------------------------------------------------------------------

    def url(self, name: str, *, insecure: bool = False) -> str:
        """Endpoint URL in mailkit's scheme, e.g. ``url("submissions")`` -> ``smtps://...``.

        Names: submissions, submission, smtp, alt, imaps, imap, pop3s, pop3. The plain ports
        (smtp, alt, imap, pop3) default to STARTTLS; ``insecure=True`` gives the
        ``+insecure`` scheme for them.
        """
        try:
            scheme, port_field, insecure_scheme = _ENDPOINTS[name]
        except KeyError:
            raise ValueError(f"unknown endpoint {name!r}; one of {sorted(_ENDPOINTS)}") from None
        if insecure:
            if insecure_scheme is None:
                raise ValueError(f"{name} is implicit TLS or TLS-only; no insecure variant")
            scheme = insecure_scheme
        return f"{scheme}://{self.host}:{getattr(self, port_field)}"

    def port_open(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=2):
                return True
        except OSError:
            return False

    # --- OAuth2 ---------------------------------------------------------------------------

    @property
    def oauth2_key_file(self) -> Path:
        """The HS256 key (base64) Dovecot validates bearer tokens with; made by ``up``."""
        return self.root / KEY_PATH

    @property
    def has_oauth2(self) -> bool:
        """Whether this stack accepts XOAUTH2/OAUTHBEARER (a stack started by an older
        ``scripts/mailstack`` does not until it is restarted)."""
        try:
            conf = self.dovecot_conf.read_text(encoding="utf-8")
        except OSError:
            return False
        return self.oauth2_key_file.is_file() and "driver = oauth2" in conf

    def oauth2_token(
        self, user: str, *, expires_in: float = 3600, key: bytes | None = None, **claims: object
    ) -> str:
        """A bearer token (JWT) for ``user`` that the stack accepts for ``expires_in`` seconds.

        Negative ``expires_in`` gives an expired token; ``key`` signs with another key (a token
        the stack must refuse); ``claims`` add or override JWT body fields.
        """
        self._check_user(user)
        signing_key = read_key(self.oauth2_key_file) if key is None else key
        return mint_jwt(signing_key, user, expires_in=expires_in, claims=claims)

    # --- server-side helpers (no SMTP/IMAP round trips) ---------------------------------

    @property
    def dovecot_conf(self) -> Path:
        return self.root / "dovecot.conf"

    def doveadm(self, *args: str, input: bytes | None = None) -> str:
        result = subprocess.run(
            ["doveadm", "-c", str(self.dovecot_conf), *args],
            input=input,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise MailStackError(
                f"doveadm {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode("utf-8", errors="replace")

    def _check_user(self, user: str) -> None:
        if user not in self.users:
            raise ValueError(f"unknown mail stack user {user!r}; one of {sorted(self.users)}")

    def reset(self, *users: str) -> None:
        """Empty all mailboxes (of all users, or the given ones) and Postfix's queue.

        Special-use folders (Drafts, Sent, Trash, Junk) stay; other folders are deleted.
        """
        for user in users:
            self._check_user(user)
        self.script("reset", *users)

    def reset_test_users(self) -> None:
        """``reset()`` for tests: like ``reset()``, except that ``BENCH_USERS`` keep their own
        folders (benchmark data survives test runs); their standard folders are emptied."""
        self.reset(*sorted(set(self.users) - BENCH_USERS))
        for user in sorted(BENCH_USERS & set(self.users)):
            for mailbox in STANDARD_FOLDERS:
                self.doveadm("expunge", "-u", user, "mailbox", mailbox, "all")

    def ensure_mailbox(self, user: str, mailbox: str) -> None:
        if mailbox.upper() == "INBOX":
            return
        try:
            self.doveadm("mailbox", "create", "-u", user, mailbox)
        except MailStackError as exc:
            if "already exists" not in str(exc):
                raise

    def deliver(self, user: str, raw: bytes, *, mailbox: str = "INBOX") -> None:
        """Store one message directly (doveadm save), creating the mailbox if needed."""
        self._check_user(user)
        self.ensure_mailbox(user, mailbox)
        self.doveadm("save", "-u", user, "-m", mailbox, input=raw)

    def deliver_many(self, user: str, messages: Iterable[bytes], *, mailbox: str = "INBOX") -> int:
        """Bulk fill a mailbox fast; returns how many messages were added.

        Writes Maildir files directly (tmp/ then rename into new/, the Maildir protocol, so
        a running Dovecot never sees half a file), then one ``doveadm force-resync`` assigns
        UIDs and builds the index so the first IMAP SELECT is quick.
        """
        global _MAILDIR_SEQ
        self._check_user(user)
        self.ensure_mailbox(user, mailbox)
        path = Path(self.doveadm("mailbox", "path", "-u", user, mailbox).strip())
        mail = pwd.getpwnam("mail")
        as_root = os.geteuid() == 0
        for sub in ("tmp", "new", "cur"):
            # Every directory made here (the mailbox's own too, when it is new) must belong to
            # Dovecot's mail user, or it cannot lock the mailbox afterwards.
            missing = [d for d in (path / sub, *(path / sub).parents) if not d.exists()]
            (path / sub).mkdir(parents=True, exist_ok=True)
            if as_root:
                for directory in missing:
                    os.chown(directory, mail.pw_uid, mail.pw_gid)
        tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        now = int(time.time())
        count = 0
        for raw in messages:
            _MAILDIR_SEQ += 1
            # S=<size> and W=<size with CRLF line ends> as Dovecot's own delivery names files: it
            # then knows both sizes without stat()ing or reading (POP3's LIST needs the latter).
            # The name is unique per process.
            vsize = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
            name = f"{now}.M{_MAILDIR_SEQ}P{tag}.mailstack,S={len(raw)},W={vsize}"
            tmp = path / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                if as_root:
                    os.fchown(fd, mail.pw_uid, mail.pw_gid)
            finally:
                os.close(fd)
            os.rename(tmp, path / "new" / name)
            count += 1
        self.doveadm("force-resync", "-u", user, mailbox)
        return count

    def mailboxes(self, user: str) -> list[str]:
        self._check_user(user)
        return [line for line in self.doveadm("mailbox", "list", "-u", user).splitlines() if line]

    def message_count(self, user: str, mailbox: str = "INBOX") -> int:
        self._check_user(user)
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", user, "messages", mailbox)
        match = re.search(r"\bmessages=(\d+)", out)
        if match is None:
            raise MailStackError(f"unexpected doveadm status output: {out!r}")
        return int(match.group(1))

    def wait_for_messages(self, user: str, count: int, mailbox: str = "INBOX", timeout: float = 10.0) -> int:
        """Poll until ``mailbox`` holds at least ``count`` messages; return the final count.

        For mail sent over SMTP, which Postfix delivers asynchronously. Raises TimeoutError
        (with the log tail) when the count is not reached in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                current = self.message_count(user, mailbox)
            except MailStackError:
                current = 0  # mailbox not created yet
            if current >= count:
                return current
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{user}/{mailbox}: {current} of {count} messages after {timeout}s\n{self.log_tail(30)}"
                )
            time.sleep(0.05)

    def log_tail(self, n: int = 50) -> str:
        chunks = []
        for name in ("dovecot.log", "postfix.log"):
            path = self.root / "log" / name
            if path.exists():
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
                chunks.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(chunks)
