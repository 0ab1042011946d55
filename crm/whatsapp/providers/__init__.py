"""WhatsApp providers behind one interface, found by name (see ``registry``)."""
