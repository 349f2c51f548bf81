"""The model catalogue: which models a conversation may use, their provider, limits and prices.

A model name from a client is only ever looked up here; it never becomes a URL or reaches a
provider unchecked. The catalogue is the built-in models below, changed by the operator's
`MODELS_FILE` (TOML), which may add models (an Ollama model at zero cost), correct a price, or
switch a built-in model off:

    [models."llama3.2:3b"]            # a new model: every field but prices_read is required
    provider = "openai"               # groq | openai | anthropic | echo
    context_window = 131072
    max_output_tokens = 8192
    input_price_per_million = 0
    output_price_per_million = 0

    [models."gpt-4o-mini"]            # a built-in model: only the fields to change
    input_price_per_million = 0.15
    prices_read = 2026-07-01

    [models."openai/gpt-oss-120b"]
    enabled = false

The file is validated when the settings are read, so a mistake stops the start-up with a message
that names the file, the model and the field.

Prices are US dollars per million tokens, each with the date they were read. This code was written
without access to the providers' pricing pages: the dates below are those of the published copies
the prices were taken from. Check them before billing anyone, and correct them in MODELS_FILE.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import BadUserInput

ProviderName = Literal["groq", "openai", "anthropic", "echo"]
# The providers that call a model; `echo` is the offline stand-in.
REAL_PROVIDERS: tuple[ProviderName, ...] = ("groq", "openai", "anthropic")
# DEFAULT_MODEL when it is unset: a model of the default provider.
DEFAULT_MODELS: dict[ProviderName, str] = {
    "groq": "llama-3.1-8b-instant",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "echo": "echo",
}
MAX_MODEL_NAME = 100
# Names as providers spell them: "llama3.2:3b", "meta-llama/Llama-3.1-8B-Instruct", ...
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,99}")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: ProviderName
    context_window: int
    max_output_tokens: int
    input_price_per_million: float
    output_price_per_million: float
    prices_read: date | None = None  # when the prices were read; None: free or unknown

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_price_per_million
            + output_tokens * self.output_price_per_million
        ) / 1_000_000


_GROQ_PRICES = date(2026, 6, 4)  # https://groq.com/pricing
_OPENAI_PRICES = date(2026, 6, 21)  # https://platform.openai.com/docs/pricing
_ANTHROPIC_PRICES = date(2026, 4, 12)  # https://docs.anthropic.com/en/docs/about-claude/pricing

BUILTIN_MODELS = (
    ModelInfo("llama-3.1-8b-instant", "groq", 131_072, 131_072, 0.05, 0.08, _GROQ_PRICES),
    ModelInfo("llama-3.3-70b-versatile", "groq", 131_072, 32_768, 0.59, 0.79, _GROQ_PRICES),
    ModelInfo("openai/gpt-oss-20b", "groq", 131_072, 65_536, 0.075, 0.30, _GROQ_PRICES),
    ModelInfo("openai/gpt-oss-120b", "groq", 131_072, 65_536, 0.15, 0.60, _GROQ_PRICES),
    ModelInfo("gpt-4o-mini", "openai", 128_000, 16_384, 0.15, 0.60, _OPENAI_PRICES),
    ModelInfo("gpt-4o", "openai", 128_000, 16_384, 2.50, 10.00, _OPENAI_PRICES),
    ModelInfo("gpt-4.1-mini", "openai", 1_047_576, 32_768, 0.40, 1.60, _OPENAI_PRICES),
    ModelInfo("gpt-4.1", "openai", 1_047_576, 32_768, 2.00, 8.00, _OPENAI_PRICES),
    ModelInfo("claude-haiku-4-5", "anthropic", 200_000, 64_000, 1.00, 5.00, _ANTHROPIC_PRICES),
    ModelInfo("claude-sonnet-4-5", "anthropic", 200_000, 64_000, 3.00, 15.00, _ANTHROPIC_PRICES),
    # Offline and free: replies are built from the prompt (see app.llm.echo).
    ModelInfo("echo", "echo", 32_768, 8_192, 0.0, 0.0),
)


class Catalogue:
    """An immutable set of models, by id."""

    def __init__(self, models: Iterable[ModelInfo]) -> None:
        self._models = MappingProxyType({model.id: model for model in models})

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def find(self, model_id: str) -> ModelInfo | None:
        return self._models.get(model_id) if len(model_id) <= MAX_MODEL_NAME else None

    def get(self, model_id: str, available: Collection[str] | None = None) -> ModelInfo:
        """The entry for `model_id`, or a BAD_USER_INPUT naming the choices."""
        model = self.find(model_id)
        if model is None:
            names = ", ".join(m.id for m in self.models(available))
            raise BadUserInput(f"Unknown model; choose one of: {names}")
        return model

    def models(self, providers: Collection[str] | None = None) -> list[ModelInfo]:
        """Every model, or only those of `providers`."""
        models = self._models.values()
        return [m for m in models if providers is None or m.provider in providers]


class CatalogueError(ValueError):
    """MODELS_FILE cannot be used; the message names the file, the model and the field."""


PositiveInt = Annotated[int, Field(ge=1, le=100_000_000)]
Price = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]


class _Entry(BaseModel):
    """One `[models."<id>"]` table of MODELS_FILE."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    provider: ProviderName | None = None
    context_window: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    input_price_per_million: Price | None = None  # strict still takes an integer (0) as a price
    output_price_per_million: Price | None = None
    prices_read: date | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _output_fits(self) -> _Entry:
        window, output = self.context_window, self.max_output_tokens
        if window is not None and output is not None and output > window:
            raise ValueError("max_output_tokens must not exceed context_window")
        return self


_NEW_MODEL_FIELDS = (
    "provider",
    "context_window",
    "max_output_tokens",
    "input_price_per_million",
    "output_price_per_million",
)


def load_catalogue(models_file: Path | None) -> Catalogue:
    """The built-in catalogue changed by `models_file`; CatalogueError if the file is wrong."""
    if models_file is None:
        return Catalogue(BUILTIN_MODELS)
    where = str(models_file)
    try:
        document = tomllib.loads(models_file.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogueError(f"{where}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise CatalogueError(f"{where}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"{where}: is not valid TOML ({error})") from None
    unknown = set(document) - {"models"}
    if unknown:
        raise CatalogueError(f'{where}: unknown table {sorted(unknown)[0]!r}; use [models."<id>"]')
    tables = document.get("models", {})
    if not isinstance(tables, dict):
        raise CatalogueError(f'{where}: models must be tables, [models."<id>"]')
    models: dict[str, ModelInfo | None] = {model.id: model for model in BUILTIN_MODELS}
    for model_id, table in tables.items():
        models[model_id] = _entry(where, model_id, table, models.get(model_id))
    return Catalogue(model for model in models.values() if model is not None)


def _entry(where: str, model_id: str, table: Any, builtin: ModelInfo | None) -> ModelInfo | None:
    label = f"{where}: model {model_id!r}"
    if not MODEL_NAME.fullmatch(model_id):
        raise CatalogueError(
            f"{label}: the name must be 1 to {MAX_MODEL_NAME} characters of "
            "letters, digits and . _ : / @ + -"
        )
    if not isinstance(table, dict):
        raise CatalogueError(f'{label}: must be a table, [models."{model_id}"]')
    try:
        entry = _Entry.model_validate(table)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "the table"
        message = first["msg"].removeprefix("Value error, ")
        raise CatalogueError(f"{label}: {field}: {message}") from None
    if not entry.enabled:
        return None
    changes = entry.model_dump(exclude_unset=True, exclude={"enabled"})
    if builtin is None:
        missing = [name for name in _NEW_MODEL_FIELDS if name not in changes]
        if missing:
            raise CatalogueError(f"{label}: {missing[0]}: required for a model not built in")
        model = ModelInfo(id=model_id, **changes)
    else:
        model = replace(builtin, **changes)
    if model.max_output_tokens > model.context_window:
        raise CatalogueError(f"{label}: max_output_tokens must not exceed context_window")
    return model


@dataclass(frozen=True, slots=True)
class _Installed:
    catalogue: Catalogue
    providers: frozenset[str] | None  # None: every provider


# The process's catalogue and its configured providers, installed at start-up (`build_runtime`):
# the reply pipeline and the conversations service look models up through `get_model`.
_installed = _Installed(Catalogue(BUILTIN_MODELS), None)


@contextmanager
def installed(catalogue: Catalogue, providers: Collection[str]) -> Iterator[None]:
    """`catalogue` (with the providers this process has) is the process's inside the block."""
    global _installed  # one catalogue per process, set at start-up
    previous, _installed = _installed, _Installed(catalogue, frozenset(providers))
    try:
        yield
    finally:
        _installed = previous


def get_model(model_id: str) -> ModelInfo:
    """The catalogue entry for `model_id`, or a BAD_USER_INPUT naming the models on offer."""
    return _installed.catalogue.get(model_id, _installed.providers)


def list_models() -> list[ModelInfo]:
    """The models of the providers this process has."""
    return _installed.catalogue.models(_installed.providers)
