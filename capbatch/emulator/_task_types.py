"""The image-recognition task types beyond ImageToTextTask, as the emulator's CapSolver
dialect takes them: required fields checked as CapSolver checks them, the solution's
shape per type (and per question or module), the oracle's key for a whole task, and
labels (answer text, ``1,4,7``) turned back into each type's solution object.

Fields and shapes, with their sources: ``docs/task-types.md``. A missing field or one
of the wrong JSON type is ``ERROR_INVALID_TASK_DATA`` (the dialect's ``no_body`` and
``bad_field``); a label that does not read as the task's shape (a text label for a
grid) makes the task unsolvable, like an image the oracle has no label for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from capbatch.emulator._dialects import Role
from capbatch.emulator._solvers import corrupt

#: Types only CapSolver's dialect takes (the other dialects refuse them as unsupported).
CAPSOLVER_TYPES: Final = frozenset(
    {"ReCaptchaV2Classification", "AwsWafClassification", "VisionEngine"}
)
#: The image fields, in the order the oracle key lists their images.
IMAGE_FIELDS: Final = ("body", "image", "images", "imageBackground")
#: Most images in one task: an AwsWafClassification grid, ImageToTextTask (number).
MAX_IMAGES: Final = 9


@dataclass(frozen=True)
class TypedTask:
    """A task of a type in ``CAPSOLVER_TYPES`` that passed its checks."""

    images: list[bytes]
    question: str | None
    shape: str


#: (role, description) of a refused task, as ``_requests.Refused`` takes them.
Refusal = tuple[Role, str]
#: Decodes one base64 image field: its bytes, or a refusal.
Decode = Callable[[object, str], "bytes | Refusal"]


def check_typed_task(
    task_type: str, task: Mapping[str, Any], decode: Decode
) -> TypedTask | Refusal:
    """The images, question and solution shape of a task, or why it is refused."""
    if task_type in {"AwsWafClassification", "ImageToTextTask"}:  # a list of images
        listed = task.get("images")
        if not isinstance(listed, list) or not listed:
            return ("no_body", "task.images is missing")
        if len(listed) > MAX_IMAGES:
            return ("bad_field", f"task.images holds more than {MAX_IMAGES} images")
        encoded: list[tuple[object, str]] = [(v, f"task.images[{i}]") for i, v in enumerate(listed)]
    else:
        wanted = ["image", "imageBackground"] if task_type == "VisionEngine" else ["image"]
        encoded = [(task.get(name), f"task.{name}") for name in wanted]
    images: list[bytes] = []
    for value, where in encoded:
        if value is None or value == "":
            return ("no_body", f"{where} is missing")
        decoded = decode(value, where)
        if isinstance(decoded, tuple):
            return decoded
        images.append(decoded)
    question = task.get("question")
    if question is not None and not isinstance(question, str):
        return ("bad_field", "task.question must be a string")
    if task_type in NEEDS_QUESTION and not question:
        return ("bad_field", "task.question is missing")
    module = task.get("module")
    if task_type == "ImageToTextTask" and module != "number":
        return ("bad_field", "task.images is only for the number module")
    if task_type == "VisionEngine" and (not isinstance(module, str) or module not in MODULES):
        return ("bad_field", "task.module is missing or not a VisionEngine module")
    return TypedTask(images, question or None, _shape(task_type, question, module))


#: Types whose tasks must carry a question.
NEEDS_QUESTION: Final = frozenset({"ReCaptchaV2Classification", "AwsWafClassification"})
#: VisionEngine modules (docs/task-types.md) and the solution each answers with.
MODULES: Final[Mapping[str, str]] = {
    "slider_1": "distance",
    "rotate_1": "angle",
    "rotate_2": "angle",
    "shein": "box",
    "space_detection": "box",
}


def _shape(task_type: str, question: str | None, module: object) -> str:
    if task_type == "ImageToTextTask":
        return "answers"  # the number module: one answer per image
    if task_type == "ReCaptchaV2Classification":
        return "recaptcha"
    if task_type == "AwsWafClassification":
        if (question or "").startswith("aws:grid"):
            return "objects"
        return "box" if "toycarcity" in (question or "") else "distance"
    return MODULES[str(module)]


def solution_of(shape: str, label: str) -> dict[str, Any] | None:
    """The solution object a label stands for in ``shape``; None when it does not read
    as one (the task is then unsolvable)."""
    if shape == "text":
        return {"text": label}
    if shape == "answers":  # the label is the answer as capbatch writes it: a JSON list
        try:
            answers = json.loads(label)
        except ValueError:
            return None
        ok = isinstance(answers, list) and all(isinstance(a, str) for a in answers)
        return {"answers": answers} if ok else None
    text = label.strip()
    if shape == "recaptcha" and text.lower() in {"true", "false"}:
        return {"type": "single", "hasObject": text.lower() == "true", "size": 1}
    numbers = _numbers(text)
    if numbers is None:
        return None
    if shape in {"recaptcha", "objects"}:
        if not all(isinstance(n, int) and n >= 0 for n in numbers):
            return None
        objects = sorted(set(numbers))
        return (
            {"type": "multi", "objects": objects, "size": 3}
            if shape == "recaptcha"
            else {"objects": objects}
        )
    if shape == "box":
        return {"box": numbers} if numbers else None
    return {shape: numbers[0]} if len(numbers) == 1 else None


def _numbers(text: str) -> list[int | float] | None:
    out: list[int | float] = []
    for part in (p.strip() for p in text.split(",")) if text else ():
        try:
            value = float(part)
        except ValueError:
            return None
        out.append(int(value) if value.is_integer() else value)
    return out


def corrupt_label(shape: str, label: str, position_roll: float, char_roll: float) -> str:
    """A wrong label of the same shape (``error_rate``): a text with one character
    changed, a grid with one tile toggled, a flipped tile, a number moved by 1 to 20."""
    solution = solution_of(shape, label)
    if shape == "text" or solution is None:
        return corrupt(label, position_roll, char_roll)
    if "answers" in solution:
        first, *rest = solution["answers"] or [""]
        return json.dumps([corrupt(first, position_roll, char_roll), *rest])
    if "hasObject" in solution:
        return "false" if solution["hasObject"] else "true"
    if "objects" in solution:
        tiles = set(solution["objects"]) ^ {int(position_roll * 9)}
        return ",".join(str(t) for t in sorted(tiles))
    offset = 1 + int(char_roll * 20)
    numbers = solution.get("box") or [solution[shape]]
    return ",".join(str(n) for n in [numbers[0] + offset, *numbers[1:]])
