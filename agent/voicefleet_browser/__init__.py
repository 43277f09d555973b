"""The browser channel: a token service for LiveKit rooms with the VoiceAgent dispatched, and the talk page."""
