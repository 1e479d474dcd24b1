"""enginesim layer."""
