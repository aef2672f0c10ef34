"""An in-memory model registry with the calls a rollout makes (`shared.rollout.Registry`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MemoryRegistry:
    """Versions, aliases and version tags of registered models, kept in dictionaries."""

    versions: dict[str, set[str]] = field(default_factory=dict)
    alias_to_version: dict[str, dict[str, str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def aliases(self, model_name: str) -> dict[str, str]:
        """Every alias of the model and the version it names."""
        return dict(self.alias_to_version.get(model_name, {}))

    def has_version(self, model_name: str, version: str) -> bool:
        """Whether the model has that version."""
        return version in self.versions.get(model_name, set())

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        """Point an alias at a version."""
        self.alias_to_version.setdefault(model_name, {})[alias] = version

    def delete_alias(self, model_name: str, alias: str) -> None:
        """Remove an alias; nothing happens if it is not set."""
        self.alias_to_version.get(model_name, {}).pop(alias, None)

    def tag_version(self, model_name: str, version: str, key: str, value: str) -> None:
        """Set a tag on a version."""
        self.tags.setdefault((model_name, version), {})[key] = value
