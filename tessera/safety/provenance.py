"""Provenance of an output: the keyed invisible mark, a signed C2PA manifest, and the ledger record.

For the pipeline (in this order):

    prov = Provenance()                                    # installation key, ledger, signing identity
    frames = prov.watermarker.mark(frames, model_id, generation_id)
    record = ProvenanceRecord.create(frames, prompt=..., key=prov.key, ...)
    write_mp4(frames, path, fps)
    prov.sign(path, record)                                # embeds the C2PA manifest in the MP4
    prov.ledger.append(record)                             # once the file is in place

The C2PA manifest (c2pa-python, embedded in the MP4, hard-bound to its bytes) names the
generator, model hash and generation id, and carries the watermark payload as its soft binding:
when a re-encode strips the manifest, the mark still leads to the ledger record. It is signed with
the installation's certificate (made at first use, self-signed chain, in $TESSERA_HOME/keys) or
the user's own (`TESSERA_C2PA_CERT`, `TESSERA_C2PA_KEY`: PEM files). A manifest signed that way
is *valid* (intact, signed by that certificate) but not *trusted* (no public trust list knows it).

`verify_file` reads all three and returns a `VerifyReport`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tessera.safety import watermark
from tessera.safety.keys import LEGACY_KEY, InstallationKey, load_key, tessera_home
from tessera.safety.ledger import Ledger, LedgerEntry, ProvenanceRecord

log = logging.getLogger(__name__)

GENERATION_ASSERTION = "org.tessera.generation"
SOFT_BINDING_ALG = "org.tessera.watermark.v2"
IDENTITY_FILE = "c2pa-identity.pem"  # private key + certificate chain, mode 0600
Z_FOREIGN = 8.0  # sync score above which an unreadable mark is called another installation's


class Watermarker:
    """Marks frames with the installation key; reads marks under it and under the legacy key."""

    def __init__(self, key: InstallationKey | None = None, strength: float = watermark.DEFAULT_STRENGTH):
        self.key = key or load_key()
        self.strength = strength

    @property
    def mark_key(self) -> bytes:
        return self.key.derive("watermark")

    def mark(self, frames: np.ndarray, model_id: str, generation_id: str) -> np.ndarray:
        """uint8 (T, H, W, 3) -> the same frames carrying model id + generation id under our key."""
        payload = watermark.make_payload(model_id, generation_id)
        return watermark.embed(frames, payload, self.mark_key, self.strength)

    def read(self, frames: np.ndarray) -> watermark.Detection:
        return watermark.detect(frames, (self.mark_key, LEGACY_KEY))


# -- the C2PA signing identity --------------------------------------------------------------------


def _make_identity() -> bytes:
    """A fresh ES256 key and a two-certificate chain (local CA -> signer) as one PEM bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    name = lambda cn: x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tessera")]
    )  # noqa: E501
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, issuer, public, signing_key, ca: bool):
        b = x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
        b = b.serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        b = b.not_valid_after(now + dt.timedelta(days=3650))
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        usage = dict.fromkeys(
            [
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ],
            False,  # noqa: E501
        )
        b = b.add_extension(
            x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage), critical=True
        )
        if not ca:  # C2PA wants an end-entity certificate with a signing EKU
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        return b.sign(signing_key, hashes.SHA256())

    ca = cert(name("Tessera installation CA"), name("Tessera installation CA"), ca_key.public_key(), ca_key, True)
    leaf = cert(name("Tessera installation signer"), ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return private + leaf.public_bytes(pem) + ca.public_bytes(pem)


def load_identity() -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM): the user's own, or the installation's, made on first use."""
    if os.environ.get("TESSERA_C2PA_CERT") and os.environ.get("TESSERA_C2PA_KEY"):
        return Path(os.environ["TESSERA_C2PA_CERT"]).read_bytes(), Path(os.environ["TESSERA_C2PA_KEY"]).read_bytes()
    path = tessera_home() / "keys" / IDENTITY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".identity-")  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.write(_make_identity())
        try:
            os.link(tmp, path)  # atomic and exclusive: a concurrent first use keeps one identity
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    bundle = path.read_bytes()
    cut = bundle.index(b"-----BEGIN CERTIFICATE-----")
    return bundle[cut:], bundle[:cut]


# -- signing and reading manifests ----------------------------------------------------------------


def _manifest(record: ProvenanceRecord, title: str) -> dict:
    from tessera import __version__

    return {
        "claim_generator_info": [{"name": "tessera", "version": __version__}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created" if record.kind == "generate" else "c2pa.edited",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
                            "softwareAgent": {"name": "tessera", "version": __version__},
                        }
                    ]
                },
            },
            {
                "label": GENERATION_ASSERTION,
                "data": {
                    "generation_id": record.generation_id,
                    "kind": record.kind,
                    "model_id": record.model_id,
                    "model_hash": record.model_hash,
                    "key_id": record.key_id,
                    "parent_id": record.parent_id,
                },
            },
            {
                "label": "c2pa.soft-binding",
                "data": {
                    "alg": SOFT_BINDING_ALG,
                    "blocks": [{"scope": {}, "value": base64.b64encode(bytes.fromhex(record.payload)).decode()}],
                },
            },
        ],
    }


def sign_mp4(path: str | Path, record: ProvenanceRecord, identity: tuple[bytes, bytes] | None = None) -> None:
    """Embed a signed C2PA manifest for `record` in the MP4 at `path` (rewritten atomically)."""
    import c2pa

    path = Path(path)
    chain, private = identity or load_identity()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None))
    tmp = path.with_name(f".{path.stem}.signing.mp4")
    try:
        with signer, c2pa.Builder(_manifest(record, path.name)) as builder:
            builder.sign_file(str(path), str(tmp), signer)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class ManifestReport:
    present: bool
    signature_valid: bool = False  # intact and signed by the certificate it names (not: trusted)
    state: str | None = None  # c2pa validation state: Invalid, Valid or Trusted
    failures: list[str] = field(default_factory=list)  # c2pa failure codes, less "untrusted"
    signer: str | None = None
    generation: dict | None = None  # the org.tessera.generation assertion
    soft_binding: str | None = None  # hex watermark payload the manifest claims


def read_manifest(path: str | Path) -> ManifestReport:
    """What the C2PA manifest of a file says, and whether it verifies."""
    import c2pa

    try:
        with c2pa.Reader(str(path)) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "ManifestNotFound" in str(e) or "JUMBF" in str(e):
            return ManifestReport(present=False)
        return ManifestReport(present=True, state="Unreadable", failures=[str(e).splitlines()[0][:200]])
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    found = {a["label"]: a.get("data") for a in manifest.get("assertions", [])}
    failures = [f["code"] for f in results.get("activeManifest", {}).get("failure", [])]
    binding = (found.get("c2pa.soft-binding") or {}).get("blocks", [{}])[0].get("value")
    return ManifestReport(
        present=True,
        signature_valid=state in ("Valid", "Trusted"),
        state=state,
        failures=[f for f in failures if f != "signingCredential.untrusted"],
        signer=(manifest.get("signature_info") or {}).get("common_name"),
        generation=found.get(GENERATION_ASSERTION),
        soft_binding=base64.b64decode(binding).hex() if binding else None,
    )


class Provenance:
    """The installation's watermarker, ledger and signing step, for the pipeline."""

    def __init__(self, key: InstallationKey | None = None, ledger: Ledger | None = None):
        self.key = key or load_key()
        self.watermarker = Watermarker(self.key)
        self.ledger = ledger or Ledger(key=self.key)

    def sign(self, path: str | Path, record: ProvenanceRecord) -> None:
        sign_mp4(path, record)


# -- verification ---------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """`tessera verify`'s answer: mark, manifest and ledger separately, then one verdict."""

    mark: dict
    manifest: dict
    ledger: dict
    verdict: str
    traced: bool  # the file leads to a generation record (by mark, manifest or fingerprint fallback)

    def to_json(self) -> dict:
        return asdict(self)


def _mark_section(found: watermark.Detection, mark_key: bytes | None) -> dict:
    origin = None
    if found.payload is not None:
        origin = "ours" if found.key == mark_key else "legacy"
    elif found.sync_z >= Z_FOREIGN:
        origin = "foreign"  # a mark is there, but no key we hold reads it
    return {
        "present": origin is not None,
        "origin": origin,
        "payload": found.payload.hex() if found.payload else None,
        "sync_z": round(found.sync_z, 2),
        "confidence": round(found.confidence, 3),
        "mirrored": bool(found.mirrored and origin is not None),
    }


def _lookup(ledger: Ledger, frames: np.ndarray, found: watermark.Detection, manifest: ManifestReport) -> dict:
    """The ledger record: by mark payload, else by the manifest's generation id, else by fingerprint."""
    from tessera.safety import fingerprint

    entry: LedgerEntry | None = None
    by = None
    if found.payload is not None:
        entry, by = ledger.find_payload(found.payload), "mark"
    if entry is None and manifest.signature_valid and manifest.generation:
        entry, by = ledger.get(str(manifest.generation.get("generation_id"))), "manifest"
    refused = None
    if entry is None:
        refused = fingerprint.fallback_refusal(frames)
        entry, by = (None, None) if refused else (ledger.nearest(frames), "fingerprint")
    if entry is None:
        return {"found": False, "by": None, "fallback_refused": refused}
    record = entry.record
    out = {"found": True, "by": by, "fallback": by == "fingerprint", "generation_id": record.generation_id}
    out |= {"model_id": record.model_id, "created_at": record.created_at, "signature_ok": entry.signature_ok}
    if entry.distance is not None:
        out["distance"] = round(entry.distance, 3)
    return out


def _verdict(mark: dict, manifest: ManifestReport, ledger: dict) -> str:
    """One sentence a person can act on, from the three sections."""
    parts = []
    if manifest.present and not manifest.signature_valid:
        parts.append(
            f"the C2PA manifest fails verification ({', '.join(manifest.failures) or manifest.state}): altered"
        )
    if mark["origin"] == "foreign":
        parts.append("carries a Tessera mark made under another installation's key: not made here")
    if ledger["found"] and ledger["signature_ok"] is False:
        parts.append(f"ledger record {ledger['generation_id']} has a bad signature: the ledger was edited")
    elif ledger["found"] and ledger["by"] == "fingerprint":
        parts.append(
            f"no mark; looks like generation {ledger['generation_id']} "
            f"(fingerprint fallback, distance {ledger['distance']}): a lead, not proof"
        )
    elif ledger["found"]:
        legacy = " (legacy public-key mark: forgeable)" if mark["origin"] == "legacy" else ""
        parts.append(f"made by generation {ledger['generation_id']}, found by {ledger['by']}{legacy}")
    elif mark["origin"] in ("ours", "legacy"):
        parts.append(f"{mark['origin']} mark with payload {mark['payload']}, but no ledger record here")
    elif manifest.signature_valid:
        parts.append("valid Tessera manifest, but no mark and no ledger record here")
    if not parts:
        parts.append("no Tessera provenance found (no mark, manifest or ledger match)")
    return "; ".join(parts)


def verify_file(path: str | Path, frames: np.ndarray, key: InstallationKey | None, ledger: Ledger) -> VerifyReport:
    """Mark, manifest and ledger for the file at `path` whose decoded frames (T, H, W, 3) are given.

    `key` None (no installation key here) still reads legacy marks and reports keyed ones as foreign.
    """
    mark_key = key.derive("watermark") if key is not None else None
    found = watermark.detect(frames, tuple(k for k in (mark_key, LEGACY_KEY) if k is not None))
    mark = _mark_section(found, mark_key)
    manifest = read_manifest(path)
    ledger_section = _lookup(ledger, frames, found, manifest)
    if manifest.present and manifest.soft_binding and found.payload is not None:
        ledger_section["manifest_agrees_with_mark"] = manifest.soft_binding == found.payload.hex()
    verdict = _verdict(mark, manifest, ledger_section)
    traced = bool(ledger_section["found"] and ledger_section.get("signature_ok") is not False)
    traced = traced or mark["origin"] in ("ours", "legacy")  # a manifest alone proves nothing: anyone can sign one
    return VerifyReport(mark, asdict(manifest), ledger_section, verdict, traced)
