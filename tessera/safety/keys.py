"""The installation's secret key: it keys the watermark and signs the ledger.

Each installation makes its own 32-byte key on first use, in `$TESSERA_HOME/keys/installation.key`
(`TESSERA_HOME` defaults to `~/.tessera`), readable by its owner only (mode 0600). A fleet that
must read each other's marks shares one key through the `TESSERA_KEY` environment variable
(64 hex digits) or a key file given explicitly (`tessera verify --key-file`).

Without the key nobody can read a mark's payload or make one that passes its check: the data
bins of the watermark are placed and phased by keys derived from it, and the payload's 24-bit
check is an HMAC under it. `LEGACY_KEY`, the constant that marked files before per-installation
keys existed, is public; it is only used to *read* such old files, which are reported as legacy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from tessera.errors import InputError

log = logging.getLogger(__name__)

LEGACY_KEY = b"tessera-watermark-v1"  # public: reads files marked before installation keys
KEY_BYTES = 32
KEY_ENV = "TESSERA_KEY"
KEY_FILE = "installation.key"


def tessera_home() -> Path:
    """$TESSERA_HOME, default ~/.tessera."""
    return Path(os.environ.get("TESSERA_HOME", "~/.tessera")).expanduser()


@dataclass(frozen=True)
class InstallationKey:
    """A secret key and a public id for it (safe to print: a hash, not the key)."""

    secret: bytes
    source: str  # where it came from: a file path or "env:TESSERA_KEY"

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"tessera-key-id" + self.secret).hexdigest()[:16]

    def derive(self, purpose: str) -> bytes:
        """A sub-key for one use (watermark layout, payload check, ledger signatures)."""
        return hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:  # never show the secret in logs or tracebacks
        return f"InstallationKey(key_id={self.key_id}, source={self.source})"


def _parse_hex(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != KEY_BYTES:
        raise InputError(
            f"{where} must hold {2 * KEY_BYTES} hex digits, got {len(text)} characters; "
            f'make one with: python -c "import secrets; print(secrets.token_hex({KEY_BYTES}))"'
        )
    return secret


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InputError(f"key file {path} has mode {mode:04o}, readable by others; run: chmod 600 {path}")
    return _parse_hex(path.read_text(), f"key file {path}")


def _create_key_file(path: Path) -> None:
    """Write a new random key with mode 0600; a concurrent creator wins harmlessly (O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(KEY_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("created the installation key %s", path)


def load_key(key_file: str | Path | None = None, create: bool = True) -> InstallationKey:
    """The key from `key_file`, else $TESSERA_KEY, else $TESSERA_HOME/keys/installation.key.

    The last is created on first use when `create` (generation does; verification does not
    need to: without a key file it can still read legacy marks and report foreign ones).
    """
    if key_file is not None:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise InputError(f"key file {path} does not exist; give the path of a file holding 64 hex digits")
        return InstallationKey(_read_key_file(path), str(path))
    if os.environ.get(KEY_ENV):
        return InstallationKey(_parse_hex(os.environ[KEY_ENV], f"${KEY_ENV}"), f"env:{KEY_ENV}")
    path = tessera_home() / "keys" / KEY_FILE
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no installation key at {path}")
        _create_key_file(path)
    return InstallationKey(_read_key_file(path), str(path))
