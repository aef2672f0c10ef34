"""Inference router: answers feature events with predictions from the deployed model variants."""
