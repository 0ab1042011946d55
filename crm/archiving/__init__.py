"""Archiving old conversations: exported to compressed JSON Lines in the media storage, verified,
then deleted from the database; restored from the lead's page.

- ``models``: the runs (``message_archives``), what each holds per conversation
  (``archived_conversations``) and the files archived messages carry (``archived_media``).
- ``jsonl``: the file format, written and read in one streaming pass.
- ``export``: ``flask crm archive`` and the schedule: choose, export, verify.
- ``purge``: the deletion, crash-safe and resumable.
- ``restore``: a lead's archived history back into the database.
- ``schedule``: the workspace setting, the daily run, the lead page's summary.
"""
