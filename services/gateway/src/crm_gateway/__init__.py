"""crm_gateway: the one HTTP entry of the CRM platform (route table, auth, forwarding, docs)."""
