"""syncpb."""
