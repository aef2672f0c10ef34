"""Writing to the MLflow model registry: log a trained batch model as a run, register it as a
new version, and move aliases (``champion``, ``challenger``), which routers follow; and quoting
values safely into MLflow search filters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd
import requests
from mlflow import MlflowClient

from shared.errors import DriftlineError, UnavailableError, UnknownModelError


class RegistryError(DriftlineError):
    """The MLflow server refused or could not be reached."""

    def __init__(self, uri: str, action: str, problem: str) -> None:
        self.uri = uri
        super().__init__(f"MLflow at {uri} could not {action}: {problem}")


_UNREACHABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)


def registry_failure(
    uri: str, action: str, exc: mlflow.exceptions.MlflowException
) -> DriftlineError:
    """What a failed MLflow call means to the user: the server out of reach (no connection, a
    timeout, retries used up) is `UnavailableError`, retry later (exit 3); else a `RegistryError`
    with the server's first line."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, _UNREACHABLE):
        return UnavailableError("MLflow", uri, f"could not {action}: {type(cause).__name__}")
    return RegistryError(uri, action, exc.message.splitlines()[0])


_SEARCHABLE = re.compile(r"[\w.:@/+ -]{1,256}")
"""Values a search filter may hold: MLflow's filter parser knows no escapes (a quote ends a
value, a backslash derails its lexer), so anything else is refused instead of quoted."""


class UnsearchableError(DriftlineError):
    """A name or id cannot be put safely into an MLflow search filter."""

    def __init__(self, what: str, value: str) -> None:
        self.what = what
        self.value = value
        super().__init__(
            f"{what} {value[:80]!r} cannot be searched for in MLflow: only letters, digits, "
            "spaces and _ . : @ / + - may appear in it"
        )


def filter_value(what: str, value: str) -> str:
    """`value` as a quoted literal of an MLflow search filter (`what` names it in the error):
    never build a filter from a name or id any other way."""
    if not _SEARCHABLE.fullmatch(value):
        raise UnsearchableError(what, value)
    return f"'{value}'"


def register_sklearn_model(
    tracking_uri: str,
    model_name: str,
    model: Any,
    example: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log `model` in a run (with params, metrics, tags) and register it; returns the version.

    The signature is inferred from `example`, so the pyfunc takes a DataFrame with those columns.
    MLflow stores sklearn models with skops, which refuses to reload types it does not know
    (every tree model) unless they are declared trusted: `model` was trained in this process by
    our own trainer, so its types are declared trusted here, and only here.
    """
    import sklearn  # here: reading the registry (the CLI, the router) needs no scikit-learn
    import skops
    import skops.io

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    # Named, MLflow's requirement inference (which reloads the model in a subprocess) is skipped:
    # it took 10 of the 12 s a registration cost on this machine.
    requirements = [f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"]
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(model_name)
    try:
        with mlflow.start_run(tags=dict(tags or {})):
            mlflow.log_params(dict(params or {}))
            mlflow.log_metrics(dict(metrics or {}))
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=model_name,
                input_example=example.head(5),
                skops_trusted_types=trusted,
                pip_requirements=requirements,
            )
    except mlflow.exceptions.MlflowException as exc:
        raise registry_failure(tracking_uri, f"register {model_name!r}", exc) from None
    return str(info.registered_model_version)


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    """Point `alias` of `model_name` at `version`."""
    try:
        MlflowClient(tracking_uri).set_registered_model_alias(model_name, alias, version)
    except mlflow.exceptions.MlflowException as exc:
        raise registry_failure(tracking_uri, f"set {model_name}@{alias}", exc) from None


class OnlineModelPyfunc(mlflow.pyfunc.PythonModel):
    """An online (River) model as an MLflow pyfunc: one `predict_one` per row of the frame."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[Any]:
        """The model's answer for each row."""
        return [self.model.predict_one(row) for row in model_input.to_dict(orient="records")]


def register_online_model(
    tracking_uri: str,
    model_name: str,
    model: Any,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> str:
    """Log an online model's prequential metrics in a run and register the model as a pyfunc
    version (blocking: call it in a worker thread); returns the version."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(model_name)
    try:
        with mlflow.start_run(tags=dict(tags)):
            mlflow.log_metrics(dict(metrics))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=OnlineModelPyfunc(model),
                registered_model_name=model_name,
                pip_requirements=["river==0.26.1"],
            )
    except mlflow.exceptions.MlflowException as exc:
        raise registry_failure(tracking_uri, f"register {model_name!r}", exc) from None
    return str(info.registered_model_version)


class MlflowRegistry:
    """The registry steps of a promotion or rollback (`shared.rollout.Registry`): aliases and
    version tags of registered models. Calls block: async callers run them in a thread."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri, registry_uri=tracking_uri)

    def aliases(self, model_name: str) -> dict[str, str]:
        """Every alias of `model_name` and the version it names."""
        try:
            model = self._client.get_registered_model(model_name)
        except mlflow.exceptions.MlflowException as exc:
            raise registry_failure(self.tracking_uri, f"read {model_name!r}", exc) from None
        return {alias: str(version) for alias, version in model.aliases.items()}

    def aliased_uris(self) -> list[str]:
        """``models:/<name>@<alias>`` of every alias of every registered model: what a form
        offers to deploy."""
        try:
            models = self._client.search_registered_models()
        except mlflow.exceptions.MlflowException as exc:
            raise registry_failure(self.tracking_uri, "list models", exc) from None
        return sorted(f"models:/{m.name}@{alias}" for m in models for alias in m.aliases)

    def resolve(self, uri: str, name: str, alias: str | None, version: str | None) -> str:
        """The version `uri` (``models:/name@alias`` or ``models:/name/version``) names now;
        `UnknownModelError` if there is none, `UnavailableError` if MLflow does not answer."""
        try:
            if alias is not None:
                return str(self._client.get_model_version_by_alias(name, alias).version)
            return str(self._client.get_model_version(name, str(version)).version)
        except mlflow.exceptions.MlflowException as exc:
            failure = registry_failure(self.tracking_uri, f"resolve {uri}", exc)
            if isinstance(failure, UnavailableError):
                raise failure from None
            raise UnknownModelError(uri, exc.message.splitlines()[0]) from None

    def has_version(self, model_name: str, version: str) -> bool:
        """Whether `model_name` has version `version`; MLflow out of reach is an
        `UnavailableError`, not a no."""
        try:
            self._client.get_model_version(model_name, version)
        except mlflow.exceptions.MlflowException as exc:
            failure = registry_failure(self.tracking_uri, f"read {model_name}/{version}", exc)
            if isinstance(failure, UnavailableError):
                raise failure from None
            return False
        return True

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        """Point `alias` of `model_name` at `version`."""
        set_alias(self.tracking_uri, model_name, alias, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        """Remove `alias` of `model_name`; nothing happens if it is not set."""
        if alias not in self.aliases(model_name):
            return
        try:
            self._client.delete_registered_model_alias(model_name, alias)
        except mlflow.exceptions.MlflowException as exc:
            raise registry_failure(self.tracking_uri, f"delete {model_name}@{alias}", exc) from None

    def tag_version(self, model_name: str, version: str, key: str, value: str) -> None:
        """Set a tag on one version of `model_name`."""
        try:
            self._client.set_model_version_tag(model_name, version, key, value)
        except mlflow.exceptions.MlflowException as exc:
            raise registry_failure(
                self.tracking_uri, f"tag {model_name} version {version}", exc
            ) from None
