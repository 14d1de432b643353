"""The results database: schema, engines and migrations, reads, and every write to a job row."""
