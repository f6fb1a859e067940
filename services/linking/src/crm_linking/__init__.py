"""The linking service: files and their links to leads and opportunities."""
