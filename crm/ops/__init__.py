"""Operations: backups, health and readiness, metrics, heartbeats."""
