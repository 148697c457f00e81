"""Database: typed ORM models, engine and sessions."""
