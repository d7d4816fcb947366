"""The agent desk: a Sanic app over the same database as the bot."""
