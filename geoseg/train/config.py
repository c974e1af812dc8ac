"""Training options: configuration files (YAML or TOML) whose keys are train_model's arguments, the validation of
every option before training starts, and the check that a resumed run continues the run it claims to continue."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError, MissingDependencyError
from geoseg.hints import option
from geoseg.options import BOUNDS, check_class_names, check_numbers, check_requires, check_types, loads_json


def train_options() -> list[str]:
    """The keys a configuration file may hold (train_model's parameters)."""
    from geoseg.train.loop import train_model

    return [p for p in inspect.signature(train_model).parameters if p != "progress"]


def load_train_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.yaml``/``.yml`` or ``.toml`` file into train_model keyword arguments (validated names).

    Raises:
        InputNotFoundError: the file does not exist.
        InvalidParameterError: an unsupported extension, malformed content, or unknown option names.
        MissingDependencyError: PyYAML is not installed (the ``config`` extra) for a YAML file.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"training config not found: {p}")
    if p.is_dir():
        raise InvalidParameterError(f"training config {p} is a folder; give a .yaml, .yml or .toml file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidParameterError(
            f"config {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 YAML or TOML"
        ) from exc
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:  # pragma: no cover
                raise MissingDependencyError("YAML configs need PyYAML: pip install 'geoseg[config]'") from exc
            data = yaml.load(text, Loader=_yaml_loader(yaml))  # a SafeLoader subclass
        else:
            raise InvalidParameterError(f"config {p.name}: use a .yaml, .yml or .toml file")
    except (ValueError, ImportError) as exc:
        if isinstance(exc, (InvalidParameterError, MissingDependencyError)):
            raise
        raise InvalidParameterError(f"config {p} is malformed: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError has no common builtin base
        raise InvalidParameterError(f"config {p} is malformed: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidParameterError(f"config {p} must be a mapping of option: value, got {type(data).__name__}")
    spelled: dict[str, str] = {}  # option name -> the key the file spells it with
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in spelled:
            raise InvalidParameterError(
                f"config {p} gives option {name} twice ({spelled[name]!r} and {key!r}); keep one of them"
            )
        spelled[name], options[name] = str(key), value
    data = options
    valid = train_options()
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise InvalidParameterError(f"config {p} has unknown option(s) {unknown}; valid options: {', '.join(valid)}")
    from geoseg.train.loop import train_model

    data = normalize_train_options(data, source=f"config {p}: ", names={k: k for k in data})
    check_types(train_model, data, source=f"config {p}: ", names={k: k for k in data})
    numbers = {k: data[k] for k in sorted(set(data) & set(BOUNDS))}
    check_numbers(numbers, source=f"config {p}: ", names={k: k for k in numbers})
    return data


def normalize_train_options(
    opts: Mapping[str, Any], *, source: str = "", names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Options as text (command-line flags, or a config file's strings) in train_model's types: comma-separated
    ``classes``/``encoder_bands`` as lists, ``arch_kwargs`` JSON as a mapping, ``augment: none`` as False.

    Raises:
        InvalidParameterError: ``arch_kwargs`` that is not a JSON object.
    """
    import json

    out = dict(opts)
    for key in ("classes", "encoder_bands"):
        if isinstance(out.get(key), str):
            out[key] = [v.strip() for v in out[key].split(",")]
    if isinstance(out.get("arch_kwargs"), str):
        raw = out["arch_kwargs"]
        shown = (names or {}).get("arch_kwargs") or option("arch_kwargs")
        try:
            out["arch_kwargs"] = loads_json(raw)
        except json.JSONDecodeError as exc:
            raise InvalidParameterError(
                f"{source}{shown} is not valid JSON ({exc}); write an object, e.g. '{{\"width\": 16}}'"
            ) from exc
        if not isinstance(out["arch_kwargs"], dict):
            raise InvalidParameterError(
                f"{source}{shown} must be a JSON object of option names and values, e.g. '{{\"width\": 16}}', got "
                f"{raw!r}"
            )
    if isinstance(out.get("augment"), str) and out["augment"].strip().lower() == "none":
        out["augment"] = False
    return out


# arguments that are data, checked by their readers rather than by type (a GeoDataFrame is valid labels)
_DATA_ARGUMENTS = ("image", "labels", "out", "progress", "device")


def check_train_arguments(arguments: Mapping[str, Any]) -> None:
    """Validate train_model's arguments (``locals()`` at its start) before any work starts: types (against its
    signature), numeric ranges (:data:`geoseg.options.BOUNDS`), the device name, class names, the architecture and
    its options (:func:`geoseg.models.registry.check_model_options`), and options that need another one.

    Raises:
        InvalidParameterError: the first invalid option, named as the caller spells it (``epochs`` / ``--epochs``).
        UnknownModelError: ``arch`` is not registered. MissingDependencyError: its extra is not installed.
    """
    from geoseg.io.labels import is_vector
    from geoseg.models.device import check_device
    from geoseg.models.registry import check_model_options
    from geoseg.train.loop import train_model

    args = dict(arguments)
    check_types(train_model, {k: v for k, v in args.items() if k not in _DATA_ARGUMENTS})
    check_numbers(
        {
            k: args.get(k)
            for k in (
                "epochs", "chip", "batch_size", "chips_per_epoch", "lr", "val_fraction", "block", "patience",
                "seed", "max_seconds", "tile", "overlap", "background", "threads", "weight_decay", "label_smoothing",
                "balance", "pixel_batch", "pixel_steps", "self_training", "pseudo_threshold",
            )
        }
    )  # fmt: skip
    check_device(args.get("device"))
    check_class_names(args.get("classes"))
    given = {**args, "adapt": None if args.get("adapt") == "repeat" else args.get("adapt")}  # the default
    check_requires(
        given,
        {
            "adapt": ("encoder_weights", "it adapts the pretrained weights' first layer to the bands"),
            "encoder_bands": ("encoder_weights", "it names the bands of the pretrained weights"),
        },
    )
    labels = args.get("labels")
    if labels is not None and not is_vector(labels):
        for name, why in (("class_field", "the class attribute"), ("background", "the class of pixels outside")):
            if args.get(name) is not None:
                raise InvalidParameterError(
                    f"{option(name)} names {why} of label polygons, but {labels} is a label raster (its values are "
                    f"the class ids); drop {option(name)}"
                )
    if args.get("resume") and args.get("overwrite"):
        raise InvalidParameterError(
            f"{option('resume', True)} continues the saved run and {option('overwrite', True)} starts over; choose one"
        )
    kwargs = dict(args.get("arch_kwargs") or {})
    if args.get("encoder") is not None:
        kwargs["encoder"] = args["encoder"]
    if args.get("arch") is not None:  # else train_model checks them once the band count chose the network
        check_model_options(args["arch"], kwargs)


#: what a resumed run must share with the run that saved the state: the model and every option that decides the
#: sequence of chips, batches and learning rates (so resuming ends exactly where an uninterrupted run would)
RESUME_OPTIONS = (
    "arch", "arch_kwargs", "classes", "bands", "seed", "loss", "sampling", "lr", "epochs", "val_fraction", "augment",
    "chip", "block", "batch_size", "chips_per_epoch", "normalization", "pixel_steps", "self_training",
    "pseudo_threshold",
)  # fmt: skip


def _yaml_loader(yaml: Any) -> Any:
    """PyYAML's SafeLoader, reading numbers in exponent form without a dot (``5e-1``, ``2e-3``) as floats, as YAML 1.2
    and every user do (YAML 1.1, which PyYAML follows, reads them as strings), and refusing a key given twice in one
    mapping (YAML 1.2 requires unique keys; PyYAML keeps the last value, so an edited option could silently lose to
    a forgotten copy of it further down)."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: explicit keys override those
                    continue
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    where = f"line {line}" if first == line else f"lines {first} and {line}"
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice ({where})")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
    )
    return Loader


def saved_options(config_json: str) -> dict[str, Any]:
    """The options a training state was saved with (see :data:`RESUME_OPTIONS`), from its ModelConfig JSON."""
    import json

    cfg = json.loads(config_json)
    training = dict((cfg.get("extra") or {}).get("training") or {})
    out = {k: training[k] for k in RESUME_OPTIONS if k in training}
    out["arch"] = cfg.get("arch")
    out["arch_kwargs"] = cfg.get("arch_kwargs") or {}
    out["classes"] = cfg.get("classes")
    out["bands"] = cfg.get("bands")
    out["normalization"] = (cfg.get("normalization") or {}).get("method", training.get("normalization"))
    out["output_stride"] = cfg.get("output_stride") or 1
    return out


def check_resume(state: str | os.PathLike[str], saved: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """Refuse to resume the training state ``state`` (saved with ``saved`` options, see :func:`saved_options`) with
    other options: ``requested`` holds the new run's values of :data:`RESUME_OPTIONS` (None = not known yet, e.g.
    classes before the labels are read; those are skipped).

    Raises:
        CheckpointError: listing each option that differs, saved value first.
    """
    differ = []
    for key in RESUME_OPTIONS:
        new, old = requested.get(key), saved.get(key)
        if new is None or old is None:
            continue
        if key == "pseudo_threshold" and not saved.get("self_training") and not requested.get("self_training"):
            continue  # without self-training rounds the threshold decides nothing
        if isinstance(old, list | tuple) and isinstance(new, list | tuple):
            same = [str(v) for v in old] == [str(v) for v in new]
        elif isinstance(old, float) or isinstance(new, float):
            same = isinstance(new, int | float) and isinstance(old, int | float) and float(old) == float(new)
        else:
            same = old == new
        if not same:
            differ.append(f"{option(key)} {old!r} (now {new!r})")
    if differ:
        raise CheckpointError(
            f"cannot resume from {state}: it was saved by a run with other options: {'; '.join(differ)}. Give the "
            f"same options to continue that run, or start over with {option('overwrite', True)} instead of "
            f"{option('resume', True)}"
        )
