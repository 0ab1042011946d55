"""Realtime events: services publish ``(workspace_id, event)`` after their commit."""
