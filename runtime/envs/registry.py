"""Finding an environment by the id an RLRun names: built-ins, installed packages, or an import path.

    environment.id: text-reverse                  a built-in
    environment.id: my-task                       an installed package's entry point in `rlrun.environments`
    environment.id: my_pkg.envs:make_env          an import path (module:attribute), nothing to register

A user trains on their own environment by installing its package (an entry point in the
`rlrun.environments` group, `my-task = "my_pkg.envs:MyTask"`) or by naming its factory; rlrun is never
forked or edited. The factory is a class or function returning an `Environment`. Its arguments are
validated before it is called, against its own pydantic model when it declares one (`Args`, a BaseModel
subclass: the factory is then called with the validated fields) or against its signature otherwise, so
`environment.args: {colours: 3}` fails at once naming the argument instead of deep in a rollout.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from rlrun.runtime.config import ENV_IMPORT_PATH
from rlrun.runtime.envs.base import Environment
from rlrun.runtime.envs.builtin import BUILTIN

ENTRY_POINT_GROUP = "rlrun.environments"

Factory = Callable[..., Environment]


class EnvironmentNotFound(ValueError):
    """No built-in, installed entry point or importable factory has this id."""


class EnvironmentArgsInvalid(ValueError):
    """The environment exists but `environment.args` do not fit its argument model (or it refused them)."""


def installed() -> dict[str, str]:
    """Every environment id that can be named, with where it comes from (for error messages and `--help`)."""
    found = {env_id: "built-in" for env_id in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown distribution"
        found.setdefault(ep.name, f"{dist} ({ep.value})")
    return found


def _listing() -> str:
    return ", ".join(f"{env_id} [{where}]" for env_id, where in sorted(installed().items()))


def _import(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise EnvironmentNotFound(
            f"environment {path!r}: cannot import module {module_name!r} ({err}); installed environments: "
            f"{_listing()}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EnvironmentNotFound(f"environment {path!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_factory(env_id: str) -> Factory:
    """The factory `env_id` names; EnvironmentNotFound lists every installed environment."""
    if env_id in BUILTIN:
        return BUILTIN[env_id]
    if ENV_IMPORT_PATH.fullmatch(env_id):
        factory = _import(env_id)
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == env_id]
        if not matches:
            raise EnvironmentNotFound(
                f"unknown environment {env_id!r}: installed environments are {_listing()}; install a package "
                f"with an entry point in the {ENTRY_POINT_GROUP!r} group, or name a factory as "
                "'package.module:factory'"
            )
        try:
            factory = matches[0].load()
        except Exception as err:  # a broken package must name itself, whatever it raised
            raise EnvironmentNotFound(
                f"environment {env_id!r}: entry point {matches[0].value!r} failed to load: "
                f"{type(err).__name__}: {err}"
            ) from None
    if not callable(factory):
        raise EnvironmentNotFound(f"environment {env_id!r}: {factory!r} is not a class or function")
    return factory


def args_model(factory: Factory) -> type[BaseModel]:
    """The environment's argument model: its own `Args` (a pydantic model), or one made from its signature."""
    declared = getattr(factory, "Args", None)
    if isinstance(declared, type) and issubclass(declared, BaseModel):
        return declared
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(factory).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    name = getattr(factory, "__name__", "Environment")
    return create_model(f"{name}Args", __config__=ConfigDict(extra="forbid", strict=False), **fields)


def validate_args(env_id: str, factory: Factory, args: dict[str, Any] | None) -> dict[str, Any]:
    """`args` checked against the factory's argument model; unknown keys are refused, like any spec typo."""
    model = args_model(factory)
    args = dict(args or {})
    unknown = sorted(set(args) - set(model.model_fields))
    if unknown:
        raise EnvironmentArgsInvalid(
            f"environment {env_id!r}: unknown args {unknown}; it takes {sorted(model.model_fields)}"
        )
    try:
        validated = model.model_validate(args)
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise EnvironmentArgsInvalid(f"environment {env_id!r}: bad args {args!r}: {details}") from None
    return {name: getattr(validated, name) for name in model.model_fields}


def make_environment(env_id: str, args: dict[str, Any] | None = None) -> Environment:
    """The environment `env_id` names, built from validated `args`.

    Raises EnvironmentNotFound or EnvironmentArgsInvalid (both ValueError), naming what is wrong."""
    factory = load_factory(env_id)
    kwargs = validate_args(env_id, factory, args)
    try:
        env = factory(**kwargs)
    except (TypeError, ValueError) as err:  # the environment's own checks (ranges, files) refused them
        raise EnvironmentArgsInvalid(f"environment {env_id!r}: bad args {args!r}: {err}") from None
    if not isinstance(env, Environment):
        raise EnvironmentNotFound(
            f"environment {env_id!r}: its factory returned {type(env).__name__}, not an "
            "rlrun.runtime.envs.base.Environment"
        )
    if not getattr(env, "id", None):
        env.id = env_id  # what samples and /health name it by
    return env
