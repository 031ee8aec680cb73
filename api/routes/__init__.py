"""One thin route module per resource; the logic lives in `api.pipeline` and the steps it runs."""
