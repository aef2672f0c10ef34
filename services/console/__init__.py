"""The operator console: a web service that shows what the platform publishes and edits it."""
