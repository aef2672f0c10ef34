"""Test doubles and helpers shared by every test tier: one place, no ad-hoc mocks."""
