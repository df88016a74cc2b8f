"""gimp-ai-enhance installer (standard library only)."""
