"""Privacy mechanisms for the updates that leave a site: differential privacy, secure aggregation, attacks."""
