"""The catalogue service: stages, lookup tables and templates of both kinds."""
