"""Which column fills which field of a task, per task type, and each row's fields read.

A task is ``{"type": ..., **constants, **fields}``: the constants are the user's
``--task-param``s (plus a type's default parameters, such as VisionEngine's
``module``); the fields come from columns, named by ``--field FIELD=COLUMN`` or by the
type's defaults (``TASK_TYPES``; their sources are in ``docs/task-types.md``).

``plan_fields`` settles the mapping once, before anything is sent: a required field no
column and no constant fills is a ``ConfigError``. ``read_row_fields``
(``task_rows.py``) then reads every row of a batch into a ``RowTask``: image fields
(``IMAGE_FIELDS``) as checked image bytes, with today's per-image rules and error
codes; other fields as JSON values; a null in a required column is that row's error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from capbatch._exceptions import ConfigError

#: Fields that hold images (base64 on the wire), in the order the emulator's oracle key
#: lists them (``emulator._solvers.oracle_key``).
IMAGE_FIELDS: Final[tuple[str, ...]] = ("body", "image", "images", "imageBackground")
#: Image fields that hold a list of images.
LIST_FIELDS: Final = frozenset({"images"})
#: A default source: the table's image column (whatever it is called).
IMAGE_COLUMN: Final = "<image column>"


@dataclass(frozen=True)
class TaskTypeSpec:
    """What one task type needs (``docs/task-types.md``)."""

    #: Groups of fields; each group needs one of its fields filled (ImageToTextTask
    #: takes ``body`` or, for the ``number`` module, ``images``).
    required: tuple[tuple[str, ...], ...]
    #: field -> where it comes from when no ``--field`` names it: ``IMAGE_COLUMN``, or
    #: the first existing of these column names.
    defaults: Mapping[str, tuple[str, ...]]
    #: Constants sent unless a ``--task-param`` sets them.
    params: Mapping[str, Any] = field(default_factory=dict)


#: The image-recognition types capbatch knows; any other type gets ``body`` from the
#: image column (the provider judges the rest).
TASK_TYPES: Final[Mapping[str, TaskTypeSpec]] = {
    "ImageToTextTask": TaskTypeSpec(
        required=(("body", "images"),), defaults={"body": (IMAGE_COLUMN,)}
    ),
    "ReCaptchaV2Classification": TaskTypeSpec(
        required=(("image",), ("question",)),
        defaults={"image": (IMAGE_COLUMN,), "question": ("question",)},
    ),
    "AwsWafClassification": TaskTypeSpec(
        required=(("images",), ("question",)),
        defaults={"images": (IMAGE_COLUMN,), "question": ("question",)},
    ),
    "VisionEngine": TaskTypeSpec(
        required=(("image",), ("imageBackground",), ("module",)),
        defaults={
            "image": (IMAGE_COLUMN,),
            "imageBackground": ("image_background", "background_path", "background"),
            "question": ("question",),
        },
        params={"module": "slider_1"},
    ),
}
_UNKNOWN_TYPE: Final = TaskTypeSpec(required=(), defaults={"body": (IMAGE_COLUMN,)})


@dataclass(frozen=True)
class FieldPlan:
    """One run's task fields: field -> column, and the constants sent with every task."""

    task_type: str
    #: field -> column, in the order fields go into the task.
    columns: Mapping[str, str]
    #: The constants: the user's ``--task-param``s over the type's defaults.
    params: Mapping[str, Any]
    #: Fields that must not be null on a row (the rest are left out when null).
    required: frozenset[str]
    #: The table's image column (its errors read as they always did).
    image_column: str

    @property
    def body_only(self) -> bool:
        """The task of every capbatch before task fields: one image in ``body``."""
        return dict(self.columns) == {"body": self.image_column}


def plan_fields(
    task_type: str,
    fields: Mapping[str, str],
    params: Mapping[str, Any],
    columns: Sequence[str],
    image_column: str,
) -> FieldPlan:
    """The run's ``FieldPlan``; a ``ConfigError`` names what is missing or wrong."""
    spec = TASK_TYPES.get(task_type, _UNKNOWN_TYPE)
    for name, column in fields.items():
        if not name or name == "type":
            raise ConfigError(f"--field {name}={column}: not a task field name")
        if column not in columns:
            raise ConfigError(
                f"--field {name}={column}: the table has no column {column!r} "
                f"(columns: {', '.join(columns)})"
            )
        if name in params:
            raise ConfigError(f"task field {name!r} is set twice: by --field and by --task-param")
    mapped: dict[str, str] = dict(fields)
    constants = {**spec.params, **params}
    for name, sources in spec.defaults.items():
        if name in mapped or name in constants or _group_filled(spec, name, mapped, constants):
            continue
        found = _first_column(sources, columns, image_column)
        if found is not None:
            mapped[name] = found
    for group in spec.required:
        if not any(name in mapped or name in constants for name in group):
            raise ConfigError(_missing(task_type, group, spec))
    ordered: dict[str, str] = {name: mapped[name] for name in IMAGE_FIELDS if name in mapped}
    ordered.update({n: c for n, c in mapped.items() if n not in ordered})
    required = {g[0] for g in spec.required if len(g) == 1} | {
        n for g in spec.required if len(g) > 1 for n in g if n in mapped
    }
    return FieldPlan(task_type, ordered, constants, frozenset(required), image_column)


def _group_filled(
    spec: TaskTypeSpec, name: str, mapped: Mapping[str, str], constants: Mapping[str, Any]
) -> bool:
    """Whether another field of ``name``'s required group is already filled (a user who
    maps ``images`` for ImageToTextTask does not also get ``body``)."""
    for group in spec.required:
        if name in group:
            return any(other in mapped or other in constants for other in group if other != name)
    return False


def _first_column(
    sources: tuple[str, ...], columns: Sequence[str], image_column: str
) -> str | None:
    for source in sources:
        if source == IMAGE_COLUMN:
            return image_column
        if source in columns:
            return source
    return None


def _missing(task_type: str, group: tuple[str, ...], spec: TaskTypeSpec) -> str:
    name = group[0]
    where = [s for s in spec.defaults.get(name, ()) if s != IMAGE_COLUMN]
    looked = f" (no column {' or '.join(map(repr, where))} in the table)" if where else ""
    return (
        f"{task_type} needs the task field {name!r}{looked}: pass --field {name}=COLUMN "
        f"or --task-param {name}=VALUE"
    )
