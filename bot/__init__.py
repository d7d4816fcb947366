"""Parley: a customer-service bot for social DMs built on Rasa Open Source 3.6."""
