"""mlcore: the logic behind the batch prediction platform. DAGs only orchestrate it."""
