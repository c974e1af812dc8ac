"""Model registry: names -> factories, extended by third parties through the ``geoseg.models`` entry-point group."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from geoseg.errors import GeoSegError, InvalidParameterError, UnknownModelError
from geoseg.options import plain_arguments

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "geoseg.models"

Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    ``output_stride`` is the default total downsampling factor: inputs are padded to, and tiles aligned on,
    multiples of it. A built model may override it with an ``output_stride`` attribute (e.g. DeepLab at 8 or 16).
    ``global_context`` marks models whose output depends on the whole input (image pooling): tiled and whole-image
    predictions then differ slightly even with a large overlap.
    ``requires`` names the modules the factory imports beyond torch and ``extra`` the geoseg extra that installs
    them (``pip install 'geoseg[EXTRA]'``); :attr:`available` tells, without importing them, whether they are there.
    """

    name: str
    factory: Factory
    output_stride: int
    description: str = ""
    family: str = ""
    global_context: bool = False
    defaults: tuple[tuple[str, Any], ...] = ()
    requires: tuple[str, ...] = ()
    extra: str = ""

    @property
    def available(self) -> bool:
        """True when every module in ``requires`` is installed (found, not imported)."""
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


_REGISTRY: dict[str, ModelSpec] = {}


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


_entry_points_loaded = False
_builtins_loaded = False

# modules whose import registers the native architectures
BUILTIN_MODULES = ("deeplab", "densenet", "fcn", "icnet", "pspnet", "resunet", "segnet", "smp", "ssnet", "tiny", "unet")


def register_model(
    name: str,
    *,
    output_stride: int,
    description: str = "",
    family: str = "",
    global_context: bool = False,
    overwrite: bool = False,
    requires: tuple[str, ...] = (),
    extra: str = "",
    **defaults: Any,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(in_channels, num_classes, **kwargs) -> nn.Module`` under ``name``.

    ``requires``/``extra``: optional modules the factory imports when called and the extra that installs them.

    Raises:
        InvalidParameterError: ``name`` is registered already and ``overwrite`` is False.
    """

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and not overwrite:
            raise InvalidParameterError(f"model {name!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[name] = ModelSpec(
            name=name,
            factory=factory,
            output_stride=output_stride,
            description=description or _first_line(factory.__doc__),
            family=family,
            global_context=global_context,
            defaults=tuple(sorted(defaults.items())),
            requires=tuple(requires),
            extra=extra,
        )
        return factory

    return deco


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import importlib

    for name in BUILTIN_MODULES:
        importlib.import_module(f"geoseg.models.{name}")


def _load_entry_points() -> None:
    global _entry_points_loaded
    _load_builtins()
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and ep.name not in _REGISTRY:
                obj()  # a registration hook
        except Exception as exc:  # a broken plugin must not break geoseg
            log.warning("could not load geoseg model plugin %s: %s", ep.name, exc)


def get_model_spec(name: str) -> ModelSpec:
    """Look up a registered architecture, with a did-you-mean hint.

    Raises:
        UnknownModelError: no architecture is registered as ``name`` (with the closest names).
    """
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"no model architecture named {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))} "
            f"(see `geoseg models`)"
        ) from None


def list_models() -> list[ModelSpec]:
    """All registered architectures, sorted by name."""
    _load_entry_points()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def model_stride(model: nn.Module, name: str | None = None) -> int:
    """Alignment a built model needs: its ``output_stride`` attribute, else the registered default."""
    stride = getattr(model, "output_stride", None)
    if stride is None and name is not None:
        stride = get_model_spec(name).output_stride
    return int(stride or 1)


#: the most members an ensemble may have (each costs one model's compute in training and prediction)
MAX_MEMBERS = 16
GENERIC_OPTIONS = ("spectral_reduction", "spectral_init", "members")


def _options_help(spec: ModelSpec) -> str:
    params = _factory_options(spec)
    if params is None:
        return "see the architecture's documentation for its options"
    shown = ", ".join(
        f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else p.name for p in params.values()
    )
    return f"{spec.name} takes {shown or 'no options'} (and {', '.join(GENERIC_OPTIONS)})"


def _factory_options(spec: ModelSpec) -> dict[str, inspect.Parameter] | None:
    """The keyword options of an architecture's factory (beyond in_channels and num_classes), or None when it takes
    any keyword (``**kwargs`` passed on, e.g. to smp)."""
    try:
        params = list(inspect.signature(spec.factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name: p for p in params[2:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_model_options(name: str, kwargs: dict[str, Any] | None = None) -> None:
    """Check an architecture name and its options before any work starts: the name is registered, its extra is
    installed, every option is one the architecture takes, with a value of the annotated type, and a model can be
    built with them (on PyTorch's ``meta`` device: no memory is allocated, nothing is computed).

    Raises:
        UnknownModelError: no architecture is registered as ``name``.
        MissingDependencyError: the architecture's extra is not installed.
        InvalidParameterError: ``kwargs`` is not a mapping, names an option the architecture does not take, or a
            value it refuses (listing the options it takes, with their defaults).
    """
    from geoseg.hints import option
    from geoseg.options import matches

    spec = get_model_spec(name)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidParameterError(
            f'{option("arch_kwargs")} must be a mapping of option names to values, e.g. {{"width": 16}}, got {kwargs!r}'
        )
    _check_available(spec)
    params = _factory_options(spec)
    if params is not None:
        unknown = sorted(set(kwargs) - set(params) - set(GENERIC_OPTIONS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], [*params, *GENERIC_OPTIONS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidParameterError(
                f"model {name!r} has no option {', '.join(map(repr, unknown))}{hint}; {_options_help(spec)}"
            )
        try:
            hints = typing.get_type_hints(spec.factory)
        except Exception:  # annotations that do not resolve: nothing to check them against
            hints = {}
        for key, value in kwargs.items():
            if key in hints and not matches(value, hints[key]):
                raise InvalidParameterError(
                    f"option {key!r} of model {name!r} must be {getattr(hints[key], '__name__', hints[key])}, got "
                    f"{value!r}; {_options_help(spec)}"
                )
    import torch

    def build(options: dict[str, Any]) -> None:
        with torch.device("meta"):
            create_model(name, in_channels=3, num_classes=2, **options)

    try:
        build(kwargs)
    except InvalidParameterError:
        try:
            build({})
        except Exception:
            return  # the architecture cannot be built on the meta device at all: its options are checked when built
        raise


def _check_available(spec: ModelSpec) -> None:
    if not spec.available:
        from geoseg.errors import MissingDependencyError

        missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
        how = f"pip install 'geoseg[{spec.extra}]'" if spec.extra else f"install {', '.join(missing)}"
        raise MissingDependencyError(f"model {spec.name!r} needs {', '.join(missing)}; {how}")


@plain_arguments
def create_model(name: str, *, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build an untrained model for ``in_channels`` input bands and ``num_classes`` classes.

    Generic options for every architecture: ``spectral_reduction=K`` puts a 1x1 spectral stem (N bands -> K
    channels) in front of the model (:mod:`geoseg.models.spectral`); ``spectral_init`` ("random" or "pca") records
    how the stem was initialised; ``members=K`` builds K independently initialised copies whose probabilities are
    averaged (a deep ensemble, :mod:`geoseg.models.ensemble`; 1, the default, is the plain model). An architecture
    may register its own default for any of them. Bad options raise :class:`~geoseg.errors.InvalidParameterError`.

    Raises:
        UnknownModelError: no architecture is registered as ``name``.
        InvalidParameterError: bad band or class counts, or options the architecture does not take.
    """
    spec = get_model_spec(name)
    _check_available(spec)
    if in_channels < 1:
        raise InvalidParameterError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 2:
        raise InvalidParameterError(f"num_classes must be >= 2 (background counts as a class), got {num_classes}")
    opts = dict(spec.defaults)
    opts.update(kwargs)
    reduction = opts.pop("spectral_reduction", None)
    spectral_init = opts.pop("spectral_init", "random")
    inner_channels = in_channels
    if reduction is not None:
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise InvalidParameterError(f"spectral_reduction must be a positive integer (channels), got {reduction!r}")
        inner_channels = reduction
    members = opts.pop("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= MAX_MEMBERS:
        raise InvalidParameterError(f"members must be an integer 1..{MAX_MEMBERS} (models averaged), got {members!r}")
    models = [_build_one(spec, in_channels, inner_channels, num_classes, opts, kwargs, reduction, spectral_init)
              for _ in range(members)]  # fmt: skip
    if members == 1:
        return models[0]
    from geoseg.models.ensemble import ProbabilityEnsemble

    return ProbabilityEnsemble(models)


def _build_one(
    spec: ModelSpec,
    in_channels: int,
    inner_channels: int,
    num_classes: int,
    opts: dict[str, Any],
    kwargs: dict[str, Any],
    reduction: int | None,
    spectral_init: str,
) -> nn.Module:
    """One model of ``spec`` (behind a spectral stem when ``reduction`` is set); see :func:`create_model`."""
    try:
        model = spec.factory(inner_channels, num_classes, **opts)
    except GeoSegError:
        raise
    except Exception as exc:  # a constructor refusing its options: TypeError, ValueError, torch's RuntimeError
        text = " ".join(str(exc).split())
        raise InvalidParameterError(
            f"cannot build model {spec.name!r} with options {kwargs}: {text}; {_options_help(spec)}"
        ) from exc
    empty = next((name for name, t in model.named_parameters() if t.numel() == 0), None)
    if empty is not None:  # torch builds a layer of 0 channels and fails only at the first forward
        raise InvalidParameterError(
            f"cannot build model {spec.name!r} with options {kwargs}: layer {empty!r} would have no weights (a width "
            f"or channel count of 0); {_options_help(spec)}"
        )
    if reduction is None:
        return model
    from geoseg.models.spectral import SpectralStem, SpectralStemModel

    return SpectralStemModel(SpectralStem(in_channels, reduction, init=spectral_init), model)
