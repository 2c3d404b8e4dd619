"""Form widgets drawn from the config dataclasses: each field's label, help, default and bounds come from its one declaration."""
from __future__ import annotations

from core import settings


def config_inputs(cls, names: tuple[str, ...], columns, defaults=None, key: str = "",
                  choices: dict | None = None) -> dict:
    """One widget per field of `cls` named in `names`, spread over `columns`; returns {name: value}.

    `defaults` (an instance of `cls`) overrides the dataclass defaults shown; `choices` narrows a field's
    choices (say, no "gpu" where there is none). A field that may be None is offered as 0 = its meaning.
    """
    values = {}
    for i, field in enumerate(settings.form_fields(cls, names)):
        where = columns[i % len(columns)]
        default = getattr(defaults, field.name) if defaults is not None else field.default
        widget_key = f"{key}{field.name}"
        if field.choices:
            options = list((choices or {}).get(field.name, field.choices))
            index = options.index(default) if default in options else 0
            values[field.name] = where.selectbox(field.label, options, index=index, help=field.help, key=widget_key)
        elif field.kind is bool:
            values[field.name] = where.checkbox(field.label, value=bool(default), help=field.help, key=widget_key)
        elif field.none_means:
            label = f"{field.label} (0 = {field.none_means})"
            chosen = where.number_input(label, 0, field.maximum, default or 0, help=field.help, key=widget_key)
            values[field.name] = int(chosen) or None
        elif field.kind is float:
            values[field.name] = float(where.number_input(
                field.label, float(field.minimum) if field.minimum is not None else None,
                float(field.maximum) if field.maximum is not None else None, float(default),
                format="%.6g", help=field.help, key=widget_key))
        else:
            values[field.name] = int(where.number_input(field.label, field.minimum, field.maximum, default,
                                                        help=field.help, key=widget_key))
    return values
