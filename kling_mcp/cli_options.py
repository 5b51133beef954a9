"""A request model's fields as command-line options: the CLI states what the tools state.

Each option is derived from the field the request model declares (requests.py): its flag from the
name (``negative_prompt`` -> ``--negative-prompt``), its help from the field's one-line description (the
same text the MCP tool's argument carries), its type and choices from the annotation. An option left
out is ``None`` and the request takes the field's default, exactly as an omitted tool argument does.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

from .requests import request_from

_R = TypeVar("_R", bound=BaseModel)

# Only where the flag is not the field's name: a repeated option reads as one item per use.
FLAGS = {"reference_images": "--reference-image", "video_duration_s": "--video-duration"}
METAVARS = {
    "first_frame": "IMAGE",
    "last_frame": "IMAGE",
    "reference_images": "IMAGE",
    "reference_video": "VIDEO",
    "video": "VIDEO",
    "video_duration_s": "S",
    "transition_s": "S",
    "confirm_cost_usd": "USD",
}


def flag(name: str) -> str:
    """The option that sets the request field ``name``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _plain(annotation: Any) -> Any:
    """``X`` for ``X | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else annotation
    return annotation


def add_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    skip: Collection[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    words: Callable[[str], str] = str,
) -> None:
    """An option for each field of ``model`` not in ``skip`` (positional arguments are added by the caller).

    ``choices`` narrows a field to the values this machine knows (providers, aspect ratios);
    ``defaults`` gives an option a default other than "unset"; ``words`` rewrites a description in
    command-line terms (argument names -> options).
    """
    choices, defaults = choices or {}, defaults or {}
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = _plain(field.annotation)
        option: dict[str, Any] = {"dest": name, "help": words(field.description or ""), "default": defaults.get(name)}
        if name in METAVARS:
            option["metavar"] = METAVARS[name]
        if get_origin(kind) is list:
            option.update(action="append", default=[])
        elif kind is bool:
            option["action"] = argparse.BooleanOptionalAction if field.default is None else "store_true"
            option["default"] = None if field.default is None else field.default
        elif get_origin(kind) is Literal:
            option["choices"] = list(get_args(kind))
        elif kind in (int, float):
            option["type"] = kind
        if name in choices:
            option["choices"] = list(choices[name])
        if field.is_required():
            option["required"] = True
        parser.add_argument(flag(name), **option)


def request_of(model: type[_R], args: argparse.Namespace, **fixed: Any) -> _R:
    """``model`` from the parsed options (and the positional arguments named after its fields)."""
    return request_from(model, {**vars(args), **fixed})


def flag_words(models: Iterable[type[BaseModel]]) -> dict[str, str]:
    """Argument name -> option for every field whose option is not just its name (for error texts)."""
    return {name: flag(name) for m in models for name in m.model_fields if "_" in name}
