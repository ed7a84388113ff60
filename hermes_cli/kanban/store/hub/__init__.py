"""The hub's SQL: a central PostgreSQL database (schema `hermes_hub`) that local boards write through to."""
