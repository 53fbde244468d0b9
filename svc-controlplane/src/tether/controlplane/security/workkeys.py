"""The control plane's work signing key: kept in a 0600 file, used to seal claimed items.

Every replica of a control plane signs with the same key, so they share the file (a
volume, or a Kubernetes Secret mounted as a file). The first start creates it when it is
missing; ``tether controlplane work-key`` prints the public key that agents pin. To
rotate: create a new key file, pin both public keys on the agents
(``TETHER_WORK_PUBLIC_KEYS=old,new``), switch the control plane to the new file, then
unpin the old key.
"""

from __future__ import annotations

from pathlib import Path

from tether.controlplane.errors import BootstrapError
from tether.shared.runtime.privatefiles import create_exclusively
from tether.shared.wire.signing import WorkKeyError, WorkSigner
from tether.shared.wire.work import WorkItem


def load_or_create_signer(path: Path) -> tuple[WorkSigner, bool]:
    """The signer whose key is in ``path``, creating a fresh key there if it is missing.

    Creation is atomic and never overwrites: the key goes to a private temporary file
    that is then hard-linked into place, so replicas starting at once on a shared volume
    all end up with the one key that won, and nobody ever reads a half-written file.

    Returns:
        The signer and whether its key was just created.

    Raises:
        BootstrapError: the file cannot be read or created, or holds no Ed25519 key.
    """
    try:
        return _read(path), False
    except FileNotFoundError:
        pass
    signer = WorkSigner.generate()
    try:
        created = create_exclusively(path, signer.to_pem())
    except OSError as err:
        raise BootstrapError(f"cannot create the work signing key file {path}: {err}") from err
    if not created:
        return _read(path), False  # another replica created it first
    return signer, True


def _read(path: Path) -> WorkSigner:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise BootstrapError(f"cannot read the work signing key file {path}: {err}") from err
    try:
        return WorkSigner.from_pem(data)
    except WorkKeyError as err:
        raise BootstrapError(f"work signing key file {path}: {err}") from err


def seal(
    signer: WorkSigner, item: WorkItem, *, deployment: str, lifetime_s: float, now: float
) -> WorkItem:
    """``item`` as handed to an agent: its deployment, an expiry at most ``lifetime_s``
    from ``now`` (sooner when the item itself expires sooner), and the signature."""
    expires_at = now + lifetime_s
    if item.expires_at is not None:
        expires_at = min(expires_at, item.expires_at)
    return signer.sign(item.model_copy(update={"deployment": deployment, "expires_at": expires_at}))
