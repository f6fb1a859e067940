"""crm_kit: the mechanisms every service of the platform shares (no domain code)."""
