"""Rasa input/output channels for each platform, plus what they share."""
