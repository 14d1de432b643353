"""Running one attempt of a job on a worker: claim, heartbeat, perform, publish, record, track."""
