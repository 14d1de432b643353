"""A job's files: where they go under the artifacts root, published whole from staging."""
