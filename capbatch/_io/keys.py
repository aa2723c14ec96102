"""Content keys: what makes two rows the same paid request.

``image_hash`` is the SHA-256 of a row's image bytes; ``task_key`` (or
``task_key_from_hash``, when only the hash is at hand) adds the task type, its parameters
and who answers it (``KeyScope``). ``whole_task_key`` keys a task with fields from
columns (several images, a question per row): every field and every image's digest.
A task that is one image in ``body`` keeps ``task_key``, so journals written before
task fields keep their keys. The cache and the journal look answers up by these keys,
so their material and format must not change without a new version tag.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def image_hash(image: bytes) -> str:
    """Hex SHA-256 of the image bytes (the ``image_sha256`` of a row)."""
    return hashlib.sha256(image).hexdigest()


@dataclass(frozen=True)
class KeyScope:
    """Who answers a task: part of its content key, so that answers are reused only from
    the same provider, and from the same server when it is not the provider's default
    (an emulator, a proxy). Not part of the task sent."""

    provider: str
    #: The URL when it is not the provider's default; None keeps the keys of journals
    #: written before URLs counted.
    base_url: str | None = None

    def key_fields(self) -> dict[str, str]:
        # These names were once mixed into the task parameters; keys stay identical.
        scoped = {"_provider": self.provider}
        if self.base_url is not None:
            scoped["_base_url"] = self.base_url
        return scoped


def task_key_from_hash(
    image_sha256: str,
    task_type: str,
    params: Mapping[str, object],
    scope: KeyScope | None = None,
) -> str:
    """``task_key`` for an image known only by its ``image_hash``."""
    # The image enters through its fixed-length hash, so the three parts cannot run into
    # each other; the version tag lets the scheme change without colliding with old keys.
    material_params = {**params, **scope.key_fields()} if scope is not None else dict(params)
    canonical = json.dumps(
        material_params, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    material = f"capbatch-task-v1\n{image_sha256}\n{task_type}\n{canonical}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def task_key(
    image: bytes,
    task_type: str,
    params: Mapping[str, object],
    scope: KeyScope | None = None,
) -> str:
    """The content key of a task: the image bytes, the task type, its parameters and who
    answers it (``scope``).

    Two rows with the same key are the same paid request; the cache and the journal
    use it. ``params`` are serialised as canonical JSON (sorted keys, no whitespace), so
    key order does not matter but ``1`` and ``1.0`` do. Non-JSON values raise TypeError.
    """
    return task_key_from_hash(image_hash(image), task_type, params, scope)


def whole_task_key(
    images: Mapping[str, bytes | Sequence[bytes]],
    values: Mapping[str, object],
    task_type: str,
    params: Mapping[str, object],
    scope: KeyScope | None = None,
) -> str:
    """The content key of a task with fields from columns: every image field (by its
    images' digests, a list field as the list of them), every other field's value, the
    task type, the constants and who answers it. Two rows with the same grid and
    different questions are different tasks."""
    digests = {
        name: image_hash(image) if isinstance(image, bytes) else [image_hash(i) for i in image]
        for name, image in images.items()
    }
    material_params = {**params, **scope.key_fields()} if scope is not None else dict(params)
    canonical = json.dumps(
        {"images": digests, "fields": dict(values), "params": material_params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # A new version tag: no v2 key can equal a v1 key of any task.
    material = f"capbatch-task-v2\n{task_type}\n{canonical}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()
