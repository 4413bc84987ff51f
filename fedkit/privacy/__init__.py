"""Privacy mechanisms applied to the updates that leave a site: secure aggregation (fedkit.privacy.secagg)."""
