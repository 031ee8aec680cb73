"""One thin route module per resource; the logic lives in `api.serving` and `api.routing`."""
